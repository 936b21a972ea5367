"""A Rerank job (webui/job.py): batches bounded by tokens, progress, priorities, and a cancel
that stops the sending, against a fake server behind httpx.MockTransport."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from server.contract import Limits, Scorer, ServedContract
from webui.batches import IN_FLIGHT, plan_batches
from webui.client import ModelInfo, RerankClient
from webui.job import RankingOutcome, rank_documents, score_batches
from webui.passages import Passage
from webui.prepared import PreparedCache


def passage(document: int, tokens: int) -> Passage:
    return Passage(document, 1, 1, f"doc {document}", tokens)


def test_batches_are_bounded_by_tokens_and_by_count() -> None:
    passages = [passage(index, tokens) for index, tokens in enumerate([30, 30, 30, 100, 10, 10, 10, 10])]
    # Each pair also costs 10 tokens: 40 + 40 = 80 fits 90, a third would be 120.
    batches = plan_batches(passages, pair_overhead=10, max_tokens=90, max_docs=3)
    assert [[p.document for p in batch] for batch in batches] == [[0, 1], [2], [3], [4, 5, 6], [7]]


def test_one_batch_when_everything_fits() -> None:
    passages = [passage(index, 5) for index in range(4)]
    assert plan_batches(passages, 0, 1000, 1000) == [passages]
    assert plan_batches([], 0, 1000, 1000) == []


def word_tokens(text: str) -> int:
    return len(text.split()) + 2


def vector(text: str) -> list[float]:
    """The fake embedding model: (occurrences of w001, of w002, 1) of a text."""
    words = text.split()
    return [float(words.count("w001")), float(words.count("w002")), 1.0]


class FakeServer:
    """One token per word; /v1/rerank scores documents by how often "w001" occurs;
    /v1/embeddings answers `vector`. Can hold each scoring call until the test releases it."""

    def __init__(self, window: int, hold: bool = False) -> None:
        self.window = window
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.hold = hold
        self.release = asyncio.Event()
        self.held = 0
        self.arrived = asyncio.Condition()
        self.cancelled = 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.requests.append((request.url.path, body))
        if request.url.path == "/tokenize":
            return httpx.Response(200, json={"count": word_tokens(body["prompt"])})
        texts = body["input"] if request.url.path == "/v1/embeddings" else body["documents"]
        assert all(word_tokens(text) <= self.window for text in texts), "a text over the window"
        if self.hold:
            async with self.arrived:
                self.held += 1
                self.arrived.notify_all()
            try:
                await self.release.wait()
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        usage = {"prompt_tokens": sum(word_tokens(text) for text in texts)}
        if request.url.path == "/v1/embeddings":
            data = [{"index": i, "embedding": vector(text)} for i, text in enumerate(texts)]
            return httpx.Response(200, json={"data": data, "usage": usage})
        results = [{"index": i, "relevance_score": doc.count("w001") / 10} for i, doc in enumerate(texts)]
        return httpx.Response(200, json={"results": results, "usage": {"prompt_tokens": 3}})

    async def wait_held(self, count: int) -> None:
        async with self.arrived:
            await asyncio.wait_for(self.arrived.wait_for(lambda: self.held >= count), 5)

    def reranks(self) -> list[dict[str, Any]]:
        return [body for path, body in self.requests if path == "/v1/rerank"]

    def embeddings(self) -> list[dict[str, Any]]:
        return [body for path, body in self.requests if path == "/v1/embeddings"]


def client_for(server: FakeServer) -> RerankClient:
    return RerankClient("http://server", timeout=5, max_connections=2, transport=httpx.MockTransport(server))


MINILM = ModelInfo("minilm", 50, ServedContract(priority_scheduling=True))
WORDS = [f"w{index:03d}" for index in range(400)]


def rank(
    server: FakeServer,
    documents: list[str],
    *,
    model: ModelInfo = MINILM,
    cache: PreparedCache | None = None,
    batch_tokens: int = 100,
    instruction: str | None = None,
    query: str = "w001",
) -> tuple[RankingOutcome, list[tuple[int, int]]]:
    seen: list[tuple[int, int]] = []

    async def run() -> RankingOutcome:
        client = client_for(server)
        try:
            return await rank_documents(
                client,
                model,
                PreparedCache(1 << 20) if cache is None else cache,
                query,
                documents,
                instruction=instruction,
                batch_tokens=batch_tokens,
                max_docs=1000,
                on_progress=lambda done, total: seen.append((done, total)),
            )
        finally:
            await client.aclose()

    return asyncio.run(run()), seen


def test_a_long_job_goes_in_token_bounded_batches_with_progress_and_priorities() -> None:
    server = FakeServer(window=50)
    long = " ".join(WORDS[:300])
    outcome, seen = rank(server, ["w002 w003", long, "w004"], batch_tokens=100)
    reranks = server.reranks()
    assert len(reranks) == outcome.batches > 2
    # Query "w001" is 3 tokens a pair; passages of up to 50: at most 100 tokens a call.
    for body in reranks:
        assert sum(word_tokens(doc) + 3 for doc in body["documents"]) <= 100 or len(body["documents"]) == 1
    # Two batches go out at once, so the second may reach the server first.
    assert sorted(body["priority"] for body in reranks) == list(range(len(reranks)))
    total = outcome.passages
    assert seen[0] == (0, total) and seen[-1] == (total, total)
    assert [done for done, _ in seen] == sorted(done for done, _ in seen) and len(seen) == len(reranks) + 1
    # The long document holds w001 (its second word): its first passage wins.
    assert outcome.ranked[0].position == 1 and outcome.ranked[0].passage.number == 1
    assert outcome.long_documents == 1 and outcome.prompt_tokens == 3 * len(reranks)


def test_a_server_without_priority_scheduling_gets_no_priority_field() -> None:
    server = FakeServer(window=50)
    rank(server, [" ".join(WORDS[:200])], model=ModelInfo("minilm", 50, ServedContract()))
    assert server.reranks() and all("priority" not in body for body in server.reranks())


def test_a_repeated_query_costs_no_token_count() -> None:
    server, cache = FakeServer(window=50), PreparedCache(1 << 20)
    documents = [" ".join(WORDS[start : start + 150]) for start in (0, 100, 200)]
    rank(server, documents, cache=cache)
    counted = [path for path, _ in server.requests].count("/tokenize")
    sent_first = [doc for body in server.reranks() for doc in body["documents"]]
    server.requests.clear()
    second, _ = rank(server, documents, cache=cache, query="w200 w201")
    # A new query short enough to fit by its bytes: the second job only scores, the same passages.
    assert counted > 3 and [path for path, _ in server.requests] == ["/v1/rerank"] * second.batches
    assert [doc for body in server.reranks() for doc in body["documents"]] == sent_first
    assert all(body["query"] == "w200 w201" for body in server.reranks())


def test_qwen3_pairs_carry_the_instruction_and_budget_from_the_contract() -> None:
    contract = ServedContract(
        scorer=Scorer.QWEN3_YES_NO,
        limits=Limits(max_doc_tokens=40, max_query_tokens=20),
        template_tokens=10,
        priority_scheduling=True,
    )
    server = FakeServer(window=40)
    outcome, _ = rank(server, [" ".join(WORDS[:100])], model=ModelInfo("qwen3", 100, contract), instruction="be brief")
    assert outcome.budget == 40  # min(100 - 20 - 10, 40)
    assert all(body["instruction"] == "be brief" for body in server.reranks())
    # Each pair costs its passage + query (3) + instruction (4) + template (10) tokens.
    for body in server.reranks():
        assert sum(word_tokens(doc) + 17 for doc in body["documents"]) <= 100 or len(body["documents"]) == 1


def test_a_too_long_query_is_refused_before_any_rerank() -> None:
    contract = ServedContract(scorer=Scorer.QWEN3_YES_NO, limits=Limits(max_query_tokens=5))
    server = FakeServer(window=50)
    with pytest.raises(ValueError, match="the server takes at most 5"):
        rank(server, ["a"], model=ModelInfo("qwen3", 2000, contract), instruction="one two three four")
    assert server.reranks() == []


def test_cancelling_a_job_stops_it_sending_at_once() -> None:
    async def scenario() -> tuple[FakeServer, int]:
        server = FakeServer(window=50, hold=True)
        client = client_for(server)
        batches = [[passage(index, 10)] for index in range(5)]
        job = asyncio.create_task(
            score_batches(client, MINILM, "q", batches, instruction=None, on_progress=lambda done, total: None)
        )
        await server.wait_held(IN_FLIGHT)
        job.cancel()
        with pytest.raises(asyncio.CancelledError):
            await job
        # The job's task has ended, and only it sends batches: nothing more can go out.
        assert job.done()
        sent = len(server.reranks())
        server.release.set()
        await client.aclose()
        return server, sent

    server, sent = asyncio.run(scenario())
    # IN_FLIGHT batches were at the server, the rest never left the page.
    assert 1 <= IN_FLIGHT < 5 and sent == IN_FLIGHT and len(server.reranks()) == IN_FLIGHT
    assert server.cancelled == IN_FLIGHT  # the calls in flight were dropped, not waited for


EMBEDDER = ModelInfo("minilm", 50, ServedContract(scorer=Scorer.EMBEDDING_COSINE, priority_scheduling=True))


def test_an_embedding_model_scores_by_the_cosine_of_the_servers_vectors() -> None:
    server = FakeServer(window=50)
    documents = ["w001 w001 w002", "w002 w003", "w001 w005 w006 w007"]
    outcome, seen = rank(server, documents, model=EMBEDDER, query="w001")
    # query (1, 0, 1); documents (2, 1, 1), (0, 1, 1), (1, 0, 1): worked out by hand.
    expected = {0: 3 / (2**0.5 * 6**0.5), 1: 1 / (2**0.5 * 2**0.5), 2: 1.0}
    assert [item.position for item in outcome.ranked] == [2, 0, 1]
    for item in outcome.ranked:
        assert item.score == pytest.approx(expected[item.position], abs=1e-9)
    assert server.reranks() == [] and outcome.reused == 0
    # One call: the query rides with the first (here the only) batch.
    assert [body["input"] for body in server.embeddings()] == [["w001", *documents]]
    assert server.embeddings()[0]["priority"] == 0
    assert seen[0] == (0, 3) and seen[-1] == (3, 3)


def test_a_repeated_query_on_an_embedding_model_embeds_only_the_query() -> None:
    server, cache = FakeServer(window=50), PreparedCache(1 << 20)
    documents = [" ".join(WORDS[start : start + 120]) for start in (0, 100, 200)] + ["w002 w002"]
    first, _ = rank(server, documents, model=EMBEDDER, cache=cache, batch_tokens=100)
    embedded = [text for body in server.embeddings() for text in body["input"]]
    assert first.batches > 2 and embedded[0] == "w001" and len(embedded) == first.passages + 1  # each once
    server.requests.clear()
    second, seen = rank(server, documents, model=EMBEDDER, cache=cache, query="w002")
    assert [path for path, _ in server.requests] == ["/v1/embeddings"]
    assert server.embeddings()[0]["input"] == ["w002"]
    assert second.reused == second.passages == first.passages and second.batches == 0
    assert seen == [(second.passages, second.passages)]
    # query (0, 1, 1): "w002 w002" is (0, 2, 1), cos = 3 / (sqrt(2) sqrt(5)); every passage
    # of the long documents holds at most one w002.
    assert second.ranked[0].position == 3
    assert second.ranked[0].score == pytest.approx(3 / (2**0.5 * 5**0.5), abs=1e-9)


def test_a_server_of_a_cross_encoder_gets_every_pair_even_if_repeated() -> None:
    server, cache = FakeServer(window=50), PreparedCache(1 << 20)
    rank(server, ["w001 w002", "w003"], cache=cache)
    rank(server, ["w001 w002", "w003"], cache=cache)
    assert server.embeddings() == [] and len(server.reranks()) == 2


def test_a_document_given_twice_is_embedded_once_and_ranked_twice() -> None:
    server = FakeServer(window=50)
    outcome, _ = rank(server, ["w001 w002", "w003", "w001 w002"], model=EMBEDDER, query="w001")
    embedded = [text for body in server.embeddings() for text in body["input"]]
    assert embedded == ["w001", "w001 w002", "w003"]
    # query (1, 0, 1) against (1, 1, 1): 2 / (sqrt(2) sqrt(3)), for both copies, in input order.
    assert [item.position for item in outcome.ranked] == [0, 2, 1]
    assert outcome.ranked[0].score == outcome.ranked[1].score == pytest.approx(2 / (2**0.5 * 3**0.5), abs=1e-9)
