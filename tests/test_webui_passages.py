"""Passage chunking and aggregation (webui/passages.py): pure logic with counting tokenizers."""

from __future__ import annotations

import asyncio
import itertools
import json
import re

import httpx
import pytest

from server.contract import ServedContract
from webui.client import ModelInfo, RerankClient
from webui.passages import (
    BudgetError,
    Passage,
    RankingOutcome,
    best_passages,
    document_passages,
    rank_documents,
    split_document,
    window_texts,
)

WORDS = [f"w{index:03d}" for index in range(300)]
TEXT = " ".join(WORDS)


def word_tokens(text: str) -> int:
    """A tokenizer with one token per word, plus [CLS] and [SEP] like MiniLM's."""
    return len(text.split()) + 2


class CountingTokenizer:
    """An async token counter that records every call, as the server's /tokenize would see them."""

    def __init__(self, count: object) -> None:
        self._count = count
        self.calls: list[str] = []

    async def __call__(self, text: str) -> int:
        self.calls.append(text)
        return self._count(text)  # type: ignore[operator,no-any-return]


def test_windows_fit_the_byte_limit_and_cover_the_text_in_order() -> None:
    windows = window_texts(TEXT, 200)
    assert len(windows) > 1
    assert all(len(window.encode()) <= 200 for window in windows)
    seen = [word for window in windows for word in window.split()]
    # Every word appears, and in order once duplicates from the overlaps are dropped.
    assert sorted(set(seen)) == WORDS
    assert list(dict.fromkeys(seen)) == WORDS


def test_consecutive_windows_overlap_by_about_a_quarter() -> None:
    windows = window_texts(TEXT, 200, overlap=0.25)
    for before, after in itertools.pairwise(windows):
        shared = set(before.split()) & set(after.split())
        shared_bytes = sum(len(word) + 1 for word in shared)
        assert 0.15 * 200 <= shared_bytes <= 0.25 * 200, (before, after)
        # The shared words are the tail of one window and the head of the next.
        assert after.startswith(" ".join(sorted(shared)))


def test_windows_without_overlap_partition_the_words() -> None:
    windows = window_texts(TEXT, 120, overlap=0.0)
    assert [word for window in windows for word in window.split()] == WORDS


def test_a_word_longer_than_the_window_is_cut_and_multibyte_characters_stay_whole() -> None:
    text = "short " + "é" * 50 + " tail"
    windows = window_texts(text, 16, overlap=0.0)
    assert all(len(window.encode()) <= 16 for window in windows)
    assert "".join(windows).replace(" ", "") == text.replace(" ", "")


def test_a_document_within_the_byte_bound_needs_no_token_count() -> None:
    counter = CountingTokenizer(word_tokens)
    text = "x" * 98
    assert asyncio.run(split_document(text, budget=100, specials=2, count_tokens=counter)) == [text]
    assert counter.calls == []


def test_a_document_within_the_token_budget_stays_whole_after_one_count() -> None:
    counter = CountingTokenizer(word_tokens)
    assert asyncio.run(split_document(TEXT, budget=302, specials=2, count_tokens=counter)) == [TEXT]
    assert counter.calls == [TEXT]


def test_a_long_document_is_split_into_passages_that_each_fit_the_budget() -> None:
    counter = CountingTokenizer(word_tokens)
    passages = asyncio.run(split_document(TEXT, budget=50, specials=2, count_tokens=counter))
    assert len(passages) > 6
    assert all(word_tokens(passage) <= 50 for passage in passages)
    assert list(dict.fromkeys(word for passage in passages for word in passage.split())) == WORDS
    # Passages use the window well, not only the provable byte bound (48 bytes, ~9 words).
    assert max(word_tokens(passage) for passage in passages) > 30


def test_an_adversarial_tokenizer_still_ends_at_the_provable_bound() -> None:
    # One token per byte plus specials: every estimate from the average is too big at first.
    def per_byte(text: str) -> int:
        return len(text.encode()) + 2

    counter = CountingTokenizer(per_byte)
    text = "ab " * 50 + "é" * 200
    passages = asyncio.run(split_document(text, budget=40, specials=2, count_tokens=counter))
    assert all(per_byte(passage) <= 40 for passage in passages)


def test_no_room_for_documents_is_a_clear_error() -> None:
    counter = CountingTokenizer(word_tokens)
    with pytest.raises(BudgetError, match="no room for documents"):
        asyncio.run(split_document(TEXT, budget=2, specials=2, count_tokens=counter))


def test_split_documents_numbers_passages_per_document() -> None:
    counter = CountingTokenizer(word_tokens)
    documents = ["short one", TEXT, "short two"]
    passages = asyncio.run(document_passages(documents, budget=120, specials=2, count_tokens=counter))
    assert passages[0] == Passage(document=0, number=1, count=1, text="short one")
    assert passages[-1] == Passage(document=2, number=1, count=1, text="short two")
    middle = [p for p in passages if p.document == 1]
    assert [p.number for p in middle] == list(range(1, len(middle) + 1))
    assert {p.count for p in middle} == {len(middle)} and len(middle) > 1


def test_a_document_takes_its_best_passage_and_remembers_which() -> None:
    documents = ["doc zero", "doc one, long", "doc two"]
    passages = [
        Passage(0, 1, 1, "doc zero"),
        Passage(1, 1, 3, "p1"),
        Passage(1, 2, 3, "p2"),
        Passage(1, 3, 3, "p3"),
        Passage(2, 1, 1, "doc two"),
    ]
    ranked = best_passages(passages, [0.30, 0.10, 0.90, 0.50, 0.60], documents)
    assert [(item.position, item.score, item.passage.number) for item in ranked] == [
        (1, 0.90, 2),
        (2, 0.60, 1),
        (0, 0.30, 1),
    ]
    assert ranked[0].text == "doc one, long" and ranked[0].passage.text == "p2"


def test_ties_keep_the_earliest_passage_and_the_input_order() -> None:
    documents = ["a", "b"]
    passages = [Passage(0, 1, 2, "a1"), Passage(0, 2, 2, "a2"), Passage(1, 1, 1, "b")]
    ranked = best_passages(passages, [0.5, 0.5, 0.5], documents)
    assert [(item.position, item.passage.number) for item in ranked] == [(0, 1), (1, 1)]


def test_scores_must_match_passages() -> None:
    with pytest.raises(ValueError, match="one score per passage"):
        best_passages([Passage(0, 1, 1, "a")], [], ["a"])


def test_window_texts_rejects_a_zero_width() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        window_texts("abc", 0)
    assert window_texts("   ", 10) == []
    assert re.fullmatch(r"abc", window_texts("abc", 10)[0])


class FakeServer:
    """A server of one-token-per-word with a window of `window` tokens, behind httpx.MockTransport."""

    def __init__(self, window: int) -> None:
        self.window = window
        self.paths: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        body = json.loads(request.content)
        if request.url.path == "/tokenize":
            return httpx.Response(200, json={"count": word_tokens(body["prompt"])})
        if any(word_tokens(doc) > self.window for doc in body["documents"]):
            return httpx.Response(400, json={"error": {"message": "This model's maximum context length is ..."}})
        results = [{"index": i, "relevance_score": doc.count("w001") / 10} for i, doc in enumerate(body["documents"])]
        return httpx.Response(200, json={"results": results, "usage": {"prompt_tokens": 1}})


def rank(server: FakeServer, documents: list[str], batch_size: int = 10) -> RankingOutcome:
    async def run() -> RankingOutcome:
        client = RerankClient("http://server", timeout=5, max_connections=1, transport=httpx.MockTransport(server))
        try:
            model = ModelInfo("all-MiniLM-L6-v2", server.window, ServedContract())
            return await rank_documents(client, model, "w001", documents, instruction=None, batch_size=batch_size)
        finally:
            await client.aclose()

    return asyncio.run(run())


def test_documents_that_fit_cost_no_token_counts() -> None:
    server = FakeServer(window=50)
    outcome = rank(server, [" ".join(WORDS[i : i + 40]) for i in range(0, 120, 40)])
    assert server.paths == ["/v1/rerank"]
    assert outcome.long_documents == 0 and outcome.ranked[0].position == 0


def test_only_a_batch_refused_as_too_long_is_measured_and_split() -> None:
    server = FakeServer(window=50)
    short, long = "w001 w002", " ".join(WORDS[:200])
    outcome = rank(server, [short, short, long, short], batch_size=2)
    # The first batch is scored whole; the second is refused, measured and split.
    assert server.paths[:2] == ["/v1/rerank", "/v1/rerank"] and "/tokenize" in server.paths
    assert outcome.long_documents == 1
    long_doc = next(d for d in outcome.ranked if d.position == 2)
    assert long_doc.passage.count > 1 and long_doc.score == 0.1


class ExpandingServer(FakeServer):
    """Counts a control string as one token in /tokenize but as eight when scoring, as the
    Qwen3 template does once it has neutralised it."""

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/rerank":
            body = json.loads(request.content)
            if any(word_tokens(doc) + 7 * doc.count("<|x|>") > self.window for doc in body["documents"]):
                self.paths.append(request.url.path)
                return httpx.Response(400, json={"error": {"message": "This model's maximum context length is"}})
        return super().__call__(request)


def test_passages_shrink_when_the_server_reads_them_longer_than_counted() -> None:
    server = ExpandingServer(window=200)
    document = " ".join(["<|x|>"] * 300 + ["w001"])
    outcome = rank(server, [document])
    assert outcome.ranked[0].passage.count > 2 and outcome.ranked[0].score == 0.1
    assert outcome.budget <= 200 // 4
