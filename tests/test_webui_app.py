"""The page end to end: real vLLM servers, the page on a free port, driven by gradio_client.

Scores are compared with the server's own /v1/rerank answer for the same texts. A counting
proxy between page and server proves the throttling: it sees every request the page makes.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError
from gradio_client.utils import QueueError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from server.contract import DEFAULT_INSTRUCTION
from tests.support.page import LaunchedPage, forward, queued, serving, wait_until
from tests.support.page import launched as launch_page
from tests.support.ranking import SCORE_TOLERANCE, assert_same_ranking
from tests.support.scoring import SCORING_PATHS, scored_texts
from tests.support.server_process import RunningServer, free_port
from webui.app import PageHandlers, create_demo
from webui.login import LoginThrottle
from webui.settings import Settings

pytestmark = pytest.mark.timeout(900)

CAPITALS = [
    "Paris is the capital of France.",
    "Beijing is the capital of China.",
    "The Great Wall of China stretches across the north of the country.",
    "Tokyo is the capital of Japan.",
    "Shanghai is the largest city in China.",
]
QUERY = "what is the capital of China?"


# --- a counting proxy in front of the real server -------------------------------------------


@dataclass
class CountingProxy:
    """Forwards every request to the server and records how many of the page's were in flight at once."""

    upstream: str
    gate: threading.Event | None = None
    """When set to an Event, scoring calls are held until that Event is set: jobs stay in flight."""
    delay_s: float = 0.0
    """Each scoring answer takes this much longer: a slow server, so a job's batches spread out."""
    fail_with: tuple[int, dict[str, Any]] | None = None
    """Answer scoring calls with this (status, body) instead of forwarding."""
    in_flight: int = 0
    max_in_flight: int = 0
    paths: list[str] = field(default_factory=list)
    scoring_calls: list[list[str]] = field(default_factory=list)
    """The texts of every scoring call (tests/support/scoring.py), in the order they arrived."""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    async def forward(self, request: Request) -> Response:
        # The monitor panel reads /metrics with its own small client, outside the Rerank slots.
        counted = request.url.path != "/metrics"
        with self._lock:
            self.in_flight += counted
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.paths.append(request.url.path)
        try:
            if request.url.path in SCORING_PATHS:
                texts = scored_texts(request.url.path, json.loads(await request.body()))
                with self._lock:
                    self.scoring_calls.append(texts)
                if self.fail_with is not None:
                    return JSONResponse(self.fail_with[1], status_code=self.fail_with[0])
                if self.gate is not None:
                    await asyncio.to_thread(self.gate.wait, 120)
                await asyncio.sleep(self.delay_s)
            return await forward(request, self.upstream, timeout=60)
        finally:
            with self._lock:
                self.in_flight -= counted

    def reset(self) -> None:
        with self._lock:
            self.max_in_flight, self.paths, self.gate, self.delay_s, self.fail_with = 0, [], None, 0.0, None
            self.scoring_calls = []


@pytest.fixture(scope="module")
def proxy(minilm_server: RunningServer) -> Iterator[tuple[CountingProxy, str]]:
    counting = CountingProxy(minilm_server.url)
    with serving(Starlette(routes=[Route("/{path:path}", counting.forward, methods=["GET", "POST"])])) as url:
        yield counting, url


# --- the page ----------------------------------------------------------------------------------


class Page(LaunchedPage):
    def rerank(
        self,
        query: str,
        pasted: str,
        *,
        mode: str = "One per line",
        upload: str | None = None,
        choice: str | None = None,
        top_n: float | None = 100,
        instruction: str = DEFAULT_INSTRUCTION,
    ) -> Any:
        file = handle_file(upload) if upload else None
        return self.client.predict(query, instruction, pasted, mode, file, choice, top_n, api_name="/rerank")


def launched(settings: Settings) -> contextlib.AbstractContextManager[Page]:
    return launch_page(settings, Page)


def page_settings(server_url: str, **overrides: Any) -> Settings:
    limits: dict[str, Any] = {"max_docs": 20, "max_doc_bytes": 20_000, "max_upload_bytes": 200_000, "timeout": 60.0}
    return Settings(server_url=server_url, **{**limits, **overrides})


@pytest.fixture(scope="module")
def minilm_page(minilm_server: RunningServer) -> Iterator[Page]:
    with launched(page_settings(minilm_server.url)) as page:
        yield page


@pytest.fixture(scope="module")
def qwen3_page(tiny_qwen3_server: RunningServer) -> Iterator[Page]:
    with launched(page_settings(tiny_qwen3_server.url)) as page:
        yield page


@pytest.fixture(scope="module")
def proxied_page(proxy: tuple[CountingProxy, str]) -> Iterator[tuple[CountingProxy, Page]]:
    """Concurrency 2 and a queue of 3, behind the counting proxy."""
    counting, url = proxy
    with launched(page_settings(url, concurrency=2, queue_size=3)) as page:
        yield counting, page


# --- what the server itself says ----------------------------------------------------------------


def served_model(server_url: str) -> tuple[str, int]:
    first = httpx.get(f"{server_url}/v1/models", timeout=30).json()["data"][0]
    return str(first["id"]), int(first["max_model_len"])


def server_ranking(
    server_url: str, query: str, documents: list[str], instruction: str | None
) -> list[tuple[int, float]]:
    """(0-based position, score) best first, straight from the server's /v1/rerank."""
    model, _ = served_model(server_url)
    payload: dict[str, Any] = {"model": model, "query": query, "documents": documents}
    if instruction is not None:
        payload["instruction"] = instruction
    answer = httpx.post(f"{server_url}/v1/rerank", json=payload, timeout=300)
    answer.raise_for_status()
    return [(int(item["index"]), float(item["relevance_score"])) for item in answer.json()["results"]]


def token_count(server_url: str, text: str) -> int:
    model, _ = served_model(server_url)
    return int(httpx.post(f"{server_url}/tokenize", json={"model": model, "prompt": text}, timeout=60).json()["count"])


def csv_rows(result: Any) -> list[dict[str, str]]:
    download = result[2]
    assert download["visible"] is True, result[1]
    with open(download["value"], encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle))


def page_ranking(result: Any) -> list[tuple[int, float]]:
    return [(int(row["position"]) - 1, float(row["score"])) for row in csv_rows(result)]


def published_contract(server_url: str) -> dict[str, Any]:
    """What the server itself says it scores with (its /rerank/contract route)."""
    return dict(httpx.get(f"{server_url}/rerank/contract", timeout=30).json())


def instruction_for(server_url: str) -> str | None:
    return DEFAULT_INSTRUCTION if published_contract(server_url)["scorer"] == "qwen3-yes-no" else None


# --- ranking equals the server's own answer -----------------------------------------------------


def check_ranking_matches_server(page: Page) -> None:
    result = page.rerank(QUERY, "\n".join(CAPITALS))
    expected = server_ranking(page.settings.server_url, QUERY, CAPITALS, instruction_for(page.settings.server_url))
    ranking = page_ranking(result)
    assert_same_ranking(ranking, expected)
    # The table shows what the CSV holds, rounded for the eye.
    table = result[0]["data"]
    assert [row[0] for row in table] == [1, 2, 3, 4, 5]
    assert [row[4] for row in table] == [position + 1 for position, _ in ranking]
    assert [row[1] for row in table] == [round(score, 4) for _, score in ranking]
    assert all(row[5] == "whole" for row in table)
    assert result[1].startswith("Ranked **5** documents in ")


def test_minilm_ranking_and_scores_equal_the_servers(minilm_page: Page) -> None:
    check_ranking_matches_server(minilm_page)
    # The real model also gets the easy question right.
    assert page_ranking(minilm_page.rerank(QUERY, "\n".join(CAPITALS)))[0][0] == 1


def test_qwen3_ranking_and_scores_equal_the_servers(qwen3_page: Page) -> None:
    check_ranking_matches_server(qwen3_page)


def test_top_n_limits_table_and_csv(minilm_page: Page) -> None:
    result = minilm_page.rerank(QUERY, "\n".join(CAPITALS), top_n=2)
    assert len(result[0]["data"]) == 2 and len(csv_rows(result)) == 2
    assert "showing the top 2" in result[1]


# --- long documents: passages, best one wins ----------------------------------------------------


def long_document(words: int, needle: str) -> str:
    """Varied filler (so tokens per word vary) with the answer in the middle."""
    vocabulary = ["river", "stone", "market", "window", "garden", "engine", "letter", "winter", "orange", "silver"]
    filler = [f"{vocabulary[i % len(vocabulary)]}{i % 7}" for i in range(words)]
    return " ".join([*filler[: words // 2], needle, *filler[words // 2 :]])


def check_long_document_is_chunked(page: Page, words: int) -> None:
    """Expectations from the server alone: its /tokenize counts of the passage the page reports,
    its score of that passage sent alone, and limits it publishes; nothing from the page's code."""
    server_url = page.settings.server_url
    model, max_model_len = served_model(server_url)
    instruction = instruction_for(server_url)
    needle = "Beijing is the capital of China."
    document = long_document(words, needle)
    documents = ["Paris is the capital of France.", document, "Tokyo is the capital of Japan."]

    # The server alone refuses the long document: the page's splitting is what makes it work.
    refused = httpx.post(
        f"{server_url}/v1/rerank",
        json={
            "model": model,
            "query": QUERY,
            "documents": [document],
            **({"instruction": instruction} if instruction else {}),
        },
        timeout=300,
    )
    assert refused.status_code == 400, refused.text

    result = page.rerank(QUERY, "\n".join(documents))
    rows = {int(row["position"]) - 1: row for row in csv_rows(result)}
    long_row = rows[1]
    number, _, total = long_row["passage"].partition(" of ")
    assert 1 <= int(number) <= int(total)
    assert "longer than the model's window" in result[1] and "split into overlapping" in result[1]
    passage = long_row["passage_text"]

    # The winning passage is a piece of the document, cut between words, within what the
    # server accepts for one text: the window for MiniLM, max_doc_tokens for a Qwen3 scorer
    # (whose window the server's plan sized for the longest query the page accepts).
    assert passage in document and passage == passage.strip()
    assert document.startswith(passage) or document[document.index(passage) - 1] == " "
    limit = max_model_len if instruction is None else published_contract(server_url)["limits"]["max_doc_tokens"]
    assert token_count(server_url, passage) <= limit < token_count(server_url, document)
    # Passages of at most `limit` tokens (each with the tokenizer's own specials) cover the
    # document only if there are at least this many of them.
    specials = token_count(server_url, "")
    assert int(total) >= -(-(token_count(server_url, document) - specials) // (limit - specials))

    # The document's score is the server's own score of that passage, sent alone. The page
    # sent it in a batch of others: in bf16 on a CPU (MiniLM) a text's score moves in the
    # third decimal with the batch around it; the filler passages score far apart from it.
    [(_, alone)] = server_ranking(server_url, QUERY, [passage], instruction)
    assert float(long_row["score"]) == pytest.approx(alone, abs=SCORE_TOLERANCE)
    if instruction is None:
        # A real model (MiniLM) ranks the passage holding the answer first.
        assert needle in passage
    assert long_row["document"] == document
    # The short documents score exactly as the server scores them whole.
    whole = dict(server_ranking(server_url, QUERY, [documents[0], documents[2]], instruction))
    assert float(rows[0]["score"]) == pytest.approx(whole[0], abs=SCORE_TOLERANCE)
    assert float(rows[2]["score"]) == pytest.approx(whole[1], abs=SCORE_TOLERANCE)
    # The table says which passage won.
    table_row = next(row for row in result[0]["data"] if row[4] == 2)
    assert table_row[5] == f"{number} of {total}"


def test_minilm_long_documents_become_passages(minilm_page: Page) -> None:
    check_long_document_is_chunked(minilm_page, words=600)


def test_qwen3_long_documents_become_passages(qwen3_page: Page) -> None:
    _, max_model_len = served_model(qwen3_page.settings.server_url)
    check_long_document_is_chunked(qwen3_page, words=max_model_len + 400)


# --- uploads ----------------------------------------------------------------------------------


def test_csv_upload_ranks_the_chosen_column(minilm_page: Page, tmp_path: Path) -> None:
    path = tmp_path / "capitals.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "body"])
        writer.writerows([index, text] for index, text in enumerate(CAPITALS))
    result = minilm_page.rerank(QUERY, "this pasted text is ignored", upload=str(path), choice="body")
    assert_same_ranking(page_ranking(result), server_ranking(minilm_page.settings.server_url, QUERY, CAPITALS, None))


def test_jsonl_upload_ranks_the_chosen_field(minilm_page: Page, tmp_path: Path) -> None:
    path = tmp_path / "capitals.jsonl"
    path.write_text("\n".join(f'{{"id": {i}, "text": "{text}"}}' for i, text in enumerate(CAPITALS)), encoding="utf-8")
    result = minilm_page.rerank(QUERY, "", upload=str(path), choice="text")
    assert_same_ranking(page_ranking(result), server_ranking(minilm_page.settings.server_url, QUERY, CAPITALS, None))


# --- bad input: one clear line each, nothing ranked -------------------------------------------


def assert_refused(result: Any, message: str) -> None:
    table, status, download = result
    assert status.startswith("⚠️ ") and "\n" not in status
    assert message in status, status
    assert table["data"] == [] and download["visible"] is False


@pytest.mark.parametrize(
    ("query", "pasted", "message"),
    [
        ("", "a\nb", "Enter a query"),
        ("   ", "a\nb", "Enter a query"),
        (QUERY, " \n\n ", "No documents"),
        (QUERY, "\n".join(f"doc {i}" for i in range(21)), "21 documents; the limit is 20 per request"),
        (QUERY, "short\n" + "x" * 20_001, "Document 2 is 20,001 bytes; the limit is 20,000 bytes"),
        ("capital " * 300, "Beijing", "The query is"),
    ],
)
def test_bad_pasted_input_gets_one_clear_line(minilm_page: Page, query: str, pasted: str, message: str) -> None:
    assert_refused(minilm_page.rerank(query, pasted), message)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("photo.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "looks binary"),
        ("latin1.csv", "text\ncaf\u00e9\n".encode("latin-1"), "is not UTF-8 text"),
        ("broken.jsonl", b'{"text": "a"}\n{"text": \n', "Line 2 is not valid JSON"),
        ("empty.txt", b"\n\n", "No documents"),
    ],
)
def test_bad_uploads_get_one_clear_line(
    minilm_page: Page, tmp_path: Path, name: str, content: bytes, message: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    assert_refused(minilm_page.rerank(QUERY, "", upload=str(path)), message)


def test_uploads_over_the_limit_are_refused_by_the_server_too(minilm_page: Page, tmp_path: Path) -> None:
    path = tmp_path / "big.txt"
    path.write_bytes(b"doc\n" * 60_000)  # 240,000 bytes > 200,000
    with pytest.raises(ValueError, match="exceeds the maximum file size"):
        minilm_page.rerank(QUERY, "", upload=str(path))
    # A client that skips that check meets the page's own limit on upload.
    with path.open("rb") as handle:
        answer = httpx.post(f"{minilm_page.url}gradio_api/upload", files={"files": handle}, timeout=60)
    assert answer.status_code == 413


class TaggingMiddleware(BaseHTTPMiddleware):
    async def dispatch(self, request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        response.headers["x-added-by"] = "caller"
        return response


def test_a_caller_adding_app_kwargs_keeps_the_upload_limit_and_the_lifespan(tmp_path: Path) -> None:
    """Gradio's own `app_kwargs` merges into the page's: it used to replace them whole."""
    settings = page_settings(f"http://127.0.0.1:{free_port()}", max_upload_bytes=100_000)
    demo = create_demo(settings)
    extra = Middleware(TaggingMiddleware)
    _, url, _ = demo.launch(
        prevent_thread_lock=True, server_port=free_port(), quiet=True, app_kwargs={"middleware": [extra]}
    )
    try:
        # Three files, each under Gradio's per-file limit, 180,000 bytes together: only the
        # page's own per-request cap (UploadLimit) refuses them.
        files = [("files", (f"part{i}.txt", b"doc\n" * 15_000, "text/plain")) for i in range(3)]
        answer = httpx.post(f"{url}gradio_api/upload", files=files, timeout=60)
        assert answer.status_code == 413
        # The page's lifespan started the GPU sampler (here: no GPU, which it then reports).
        sampler = demo.resources.sampler
        wait_until(lambda: sampler.snapshot().reason != "GPU sampler has not started yet", "the GPU sampler to start")
        # And the caller's own middleware runs too.
        assert httpx.get(f"{url}config", timeout=30).headers.get("x-added-by") == "caller"
    finally:
        demo.close()


def test_other_file_types_are_refused(minilm_page: Page, tmp_path: Path) -> None:
    path = tmp_path / "report.pdf"
    path.write_bytes(b"%PDF-1.7")
    with pytest.raises(AppError, match="Invalid file type"):
        minilm_page.rerank(QUERY, "", upload=str(path))


def test_document_html_is_shown_escaped_and_csv_formulas_are_neutralised(minilm_page: Page) -> None:
    documents = ['<script>alert("x")</script> capital of China', '=HYPERLINK("http://evil","click") Beijing']
    result = minilm_page.rerank(QUERY, "\n".join(documents))
    cells = {row[4]: row[3] for row in result[0]["data"]}
    assert cells[1] == "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; <mark>capital</mark> of <mark>China</mark>"
    by_position = {row["position"]: row["document"] for row in csv_rows(result)}
    assert by_position["2"] == "'" + documents[1]
    assert by_position["1"] == documents[0]


def test_inputs_are_never_outputs_of_rerank(minilm_page: Page) -> None:
    """Whatever happens, Rerank writes only the table, status and download: the analyst's
    query, instruction, pasted text and upload stay as they were."""
    config = httpx.get(f"{minilm_page.url}config", timeout=30).json()
    rerank = next(dep for dep in config["dependencies"] if dep.get("api_name") == "rerank")
    assert len(rerank["inputs"]) == 7 and len(rerank["outputs"]) == 3
    assert not set(rerank["inputs"]) & set(rerank["outputs"])


# --- the server down, slow, or refusing --------------------------------------------------------


def test_server_down_is_one_clear_line() -> None:
    with launched(page_settings(f"http://127.0.0.1:{free_port()}")) as page:
        assert_refused(page.rerank(QUERY, "a\nb"), "is not reachable: it is starting up or down")


def test_slow_server_times_out_with_one_clear_line() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        with launched(page_settings(url, timeout=1.0)) as page:
            started = time.monotonic()
            assert_refused(page.rerank(QUERY, "a\nb"), "did not answer within 1 s")
            assert time.monotonic() - started < 10


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (
            400,
            {"error": {"message": "Too many documents for this engine.", "type": "BadRequestError", "code": 400}},
            "The server refused the request (400): Too many documents for this engine.",
        ),
        (401, {"error": "Unauthorized"}, "refused the API key (401)"),
        (
            500,
            {"error": {"message": "EngineCore encountered an issue.", "type": "InternalServerError", "code": 500}},
            "The server failed (500): EngineCore encountered an issue.",
        ),
    ],
)
def test_server_errors_are_one_clear_line(
    proxied_page: tuple[CountingProxy, Page], status: int, body: dict[str, Any], message: str
) -> None:
    counting, page = proxied_page
    counting.reset()
    counting.fail_with = (status, body)
    try:
        assert_refused(page.rerank(QUERY, "a\nb"), message)
    finally:
        counting.reset()


# --- throttling -----------------------------------------------------------------------------------


def test_concurrency_limit_holds_at_the_server_and_a_full_queue_says_busy(
    proxied_page: tuple[CountingProxy, Page], minilm_server: RunningServer
) -> None:
    counting, page = proxied_page
    counting.reset()
    gate = counting.gate = threading.Event()
    settings = page.settings
    expected = server_ranking(minilm_server.url, QUERY, CAPITALS, None)

    def submit(pasted: str = "\n".join(CAPITALS)) -> Any:
        return page.client.submit(
            QUERY, DEFAULT_INSTRUCTION, pasted, "One per line", None, None, 100, api_name="/rerank"
        )

    try:
        # Fill the running slots (held at the proxy), then the queue, one job at a time.
        jobs = [submit() for _ in range(settings.concurrency)]
        wait_until(lambda: counting.in_flight == settings.concurrency, "both slots to call the server")
        for waiting in range(1, settings.queue_size + 1):
            jobs.append(submit())
            wait_until(lambda: queued(page.url) == waiting, f"{waiting} job(s) to wait in the queue")  # noqa: B023
        # The queue is full: the monitor panel's tick (sent as the browser sends it, outside
        # the queue) still answers, and one more Rerank is told to try again.
        tick = httpx.post(
            f"{page.url}gradio_api/run/monitor_refresh", json={"data": [], "session_hash": "panel-viewer"}, timeout=10
        )
        assert tick.status_code == 200 and "Engine" in tick.json()["data"][2]
        with pytest.raises(QueueError, match="Please try again"):
            submit("a").result(timeout=60)
    finally:
        gate.set()
    done = [job.result(timeout=300) for job in jobs]
    peak, calls = counting.max_in_flight, list(counting.scoring_calls)
    counting.reset()

    assert len(done) == settings.concurrency + settings.queue_size
    for result in done:
        assert_same_ranking(page_ranking(result), expected)
    # Every request the page made passed the proxy: never more than the limit at once, and
    # the limit was reached (the jobs did overlap). Each accepted job asked for its query's
    # vector once (MiniLM is an embedding model; the query rides with the documents not
    # embedded yet); the refused one never reached the server.
    assert peak == settings.concurrency
    assert sum(call[0] == QUERY for call in calls) == len(calls) == len(done)


# --- long jobs: progress, Stop, documents prepared once ------------------------------------------


LONG_DOCUMENTS = [long_document(500, f"{city} is a city.") for city in ("Lyon", "Osaka", "Quito", "Perth")]
"""Four documents of ~1,000 MiniLM tokens: each over its 256-token window, so each is split."""


@pytest.fixture
def sliced_page(proxy: tuple[CountingProxy, str]) -> Iterator[tuple[CountingProxy, Page]]:
    """One job at a time, 512-token batches, behind the counting proxy: a long job is many calls."""
    counting, url = proxy
    counting.reset()
    with launched(page_settings(url, concurrency=1, batch_tokens=512)) as page:
        yield counting, page
    counting.reset()


def submit(page: Page, query: str, documents: list[str]) -> Any:
    pasted = "\n".join(documents)
    return page.client.submit(query, DEFAULT_INSTRUCTION, pasted, "One per line", None, None, 100, api_name="/rerank")


def test_a_long_job_shows_passages_scored_and_a_repeat_asks_for_no_token_counts(
    sliced_page: tuple[CountingProxy, Page],
) -> None:
    counting, page = sliced_page
    counting.delay_s = 0.3  # each batch takes a while, so the progress can be seen between them
    job = submit(page, QUERY, LONG_DOCUMENTS)
    seen: list[tuple[int, int, str]] = []

    def midway() -> bool:
        seen.extend((unit.index, unit.length, unit.unit) for unit in job.status().progress_data or [])
        return any(0 < done < total for done, total, _ in seen) or job.done()

    wait_until(midway, "a progress update between batches")
    result = job.result(timeout=300)
    # The passages in batches, the query's own text riding with the first; the total shown is
    # every passage the page sent, as the proxy saw them arrive.
    calls = counting.scoring_calls
    assert calls[0][0] == QUERY and all(QUERY not in call for call in calls[1:])
    sent = [len(calls[0]) - 1, *(len(call) for call in calls[1:])]
    assert len(sent) > 3 and max(sent) < sum(sent)
    assert {total for _, total, _ in seen} == {sum(sent)} and {unit for *_, unit in seen} == {"passages"}
    assert any(0 < done < sum(sent) for done, _, _ in seen)
    assert "/tokenize" in counting.paths

    # The same documents with another query: no token count, no passage sent again, only the
    # new query's vector; the ranking agrees with the server's own /v1/rerank of the passages.
    counting.paths.clear()
    counting.scoring_calls.clear()
    again = submit(page, "where is Osaka?", LONG_DOCUMENTS).result(timeout=300)
    assert "/tokenize" not in counting.paths
    assert counting.scoring_calls == [["where is Osaka?"]]
    assert {row["document"] for row in csv_rows(result)} == {row["document"] for row in csv_rows(again)}


def test_stop_sends_nothing_more_and_frees_the_slot_at_once(sliced_page: tuple[CountingProxy, Page]) -> None:
    counting, page = sliced_page
    counting.delay_s = 2.0
    job = submit(page, QUERY, LONG_DOCUMENTS)
    wait_until(lambda: len(counting.scoring_calls) >= 1, "the long job's first batch at the server")
    assert job.cancel()
    wait_until(job.done, "the cancelled job to end")
    sent_before_stop = len(counting.scoring_calls)

    # The page runs one job at a time: a small job now runs only if Stop freed the slot, and
    # it is the next thing the server sees; the long job sends nothing more.
    small = submit(page, "which capital?", CAPITALS).result(timeout=120)
    assert_same_ranking(page_ranking(small), server_ranking(counting.upstream, "which capital?", CAPITALS, None))
    after = counting.scoring_calls[sent_before_stop:]
    assert after == [["which capital?", *CAPITALS]]
    assert sent_before_stop < 3  # the long job had many batches to go


# --- safe launch defaults and login ---------------------------------------------------------------


def test_launch_defaults_turn_off_history_monitoring_and_tracebacks(minilm_page: Page) -> None:
    config = httpx.get(f"{minilm_page.url}config", timeout=30).json()
    assert config["run_history"] is False and config["show_error"] is False
    assert "runs" not in config["footer_links"]
    assert httpx.get(f"{minilm_page.url}monitoring", timeout=30).status_code != 200
    # api_open=False: the queued Rerank cannot be called around the queue.
    direct = httpx.post(
        f"{minilm_page.url}gradio_api/run/rerank", json={"data": [QUERY, "", "a", "One per line", None, None, 5]}
    )
    assert direct.status_code in (403, 404), direct.text


def test_login_is_required_and_repeated_failures_are_slowed_then_refused() -> None:
    settings = page_settings(f"http://127.0.0.1:{free_port()}", auth=(("ann", "right"),))
    with launch_page(settings) as page:
        url = page.url
        assert httpx.get(f"{url}config", timeout=30).status_code == 401
        started = time.monotonic()
        for _ in range(5):
            assert (
                httpx.post(f"{url}login", data={"username": "ann", "password": "guess"}, timeout=30).status_code != 200
            )
        assert time.monotonic() - started >= 5 * 0.9  # each failure cost about a second
        # Now even the right password is refused for this name until the window passes.
        assert httpx.post(f"{url}login", data={"username": "ann", "password": "right"}, timeout=30).status_code != 200


def test_login_throttle_forgets_failures_after_the_window() -> None:
    now = [0.0]
    throttle = LoginThrottle(
        [("ann", "pw"), ("bob", "pw2")], max_failures=2, window_s=60, delay_s=0, clock=lambda: now[0]
    )

    def check(user: str, password: str) -> bool:
        return asyncio.run(throttle.check(user, password))

    assert check("ann", "pw")
    assert not check("ann", "x") and not check("ann", "y")
    assert not check("ann", "pw")  # locked
    assert check("bob", "pw2")  # other names are not locked by ann's failures
    now[0] = 61.0
    assert check("ann", "pw")
    assert not check("nobody", "pw")


def test_login_throttle_forgets_made_up_names() -> None:
    now = [0.0]
    throttle = LoginThrottle([("ann", "pw")], delay_s=0, window_s=60, clock=lambda: now[0])
    for index in range(10_001):
        asyncio.run(throttle.check(f"guess{index}", "x"))
    now[0] = 120.0
    asyncio.run(throttle.check("one-more", "x"))
    assert throttle._failures == {"one-more": [120.0]}


# --- the server-state banner --------------------------------------------------------------------


def test_banner_shows_model_window_and_profile(minilm_server: RunningServer) -> None:
    model, max_model_len = served_model(minilm_server.url)
    demo = create_demo(page_settings(minilm_server.url, profile_label="cpu"))
    update = asyncio.run(PageHandlers(demo.resources).banner())
    assert update["value"].startswith("✅ Server ready")
    assert f"`{model}`" in update["value"] and f"window **{max_model_len:,}** tokens" in update["value"]
    assert "profile **cpu**" in update["value"]


def test_banner_says_plainly_when_the_server_is_down() -> None:
    demo = create_demo(page_settings(f"http://127.0.0.1:{free_port()}"))
    update = asyncio.run(PageHandlers(demo.resources).banner())
    assert update["value"].startswith("⚠️ **Server not ready.**") and "starting up or down" in update["value"]
    assert update["elem_classes"] == ["banner-down"]
