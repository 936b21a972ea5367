"""The analyst's session in a real browser: a long job's progress, and the Evaluate view.

    .venv/bin/python -m pytest -m browser tests/test_browser_session.py

Debian's chromium through Playwright (tests/support/browser.py, the one harness), at the desk
screen's size, against the real MiniLM server. A proxy in front of the server holds each
/v1/rerank call a moment, so the progress of a long job is on screen long enough to be read.
The Evaluate view's screenshot is kept in tests/artifacts/browser/evaluate.png (README's picture).
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import BrowserContext, Page, expect
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.support.browser import ARTIFACTS, DESKTOP, WAIT_MS, chromium_for_tests, paste, photograph
from tests.support.page import LaunchedPage, forward, launched, serving, wait_until
from tests.support.scoring import SCORING_PATHS, scored_texts
from tests.support.server_process import RunningServer
from webui.settings import Settings

pytestmark = [pytest.mark.browser, pytest.mark.timeout(600)]

DOCUMENTS = [
    "Paris is the capital of France.",
    "Beijing is the capital of China.",
    "Tokyo is the capital of Japan.",
    "Shanghai is the largest city in China.",
]
LONG = " ".join(f"river{index % 7} stone{index % 5} market{index % 3}" for index in range(400))
"""~2,400 MiniLM tokens: ten passages or more, sent as many small batches."""


@dataclass
class SlowProxy:
    """Forwards everything to the server, holding each scoring call `delay_s` first (and for
    as long as `holding` is set), and records the texts of the scoring calls that reached it."""

    upstream: str
    delay_s: float = 0.5
    holding: threading.Event = field(default_factory=threading.Event)
    calls: list[list[str]] = field(default_factory=list)
    """The texts of each scoring call received so far, in order of arrival."""
    held: int = 0
    """Scoring calls being held now."""

    async def forward(self, request: Request) -> Response:
        if request.url.path in SCORING_PATHS:
            self.calls.append(scored_texts(request.url.path, json.loads(await request.body())))
            self.held += 1
            try:
                await asyncio.sleep(self.delay_s)
                while self.holding.is_set():
                    await asyncio.sleep(0.05)
            finally:
                self.held -= 1
        return await forward(request, self.upstream, timeout=60)


@pytest.fixture(scope="module")
def slow(minilm_server: RunningServer) -> Iterator[tuple[SlowProxy, LaunchedPage]]:
    """The page behind the slow proxy, its batches small (300 tokens), so a long job takes many."""
    proxy = SlowProxy(minilm_server.url)
    app = Starlette(routes=[Route("/{path:path}", proxy.forward, methods=["GET", "POST"])])
    with serving(app) as proxy_url:
        settings = Settings(server_url=proxy_url, max_docs=20, timeout=120.0, batch_tokens=300)
        with launched(settings) as page:
            yield proxy, page
    proxy.holding.clear()


@pytest.fixture(scope="module")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    with chromium_for_tests(tmp_path_factory.mktemp("chromium-profile")) as context:
        yield context


@pytest.fixture
def tab(
    chromium: BrowserContext, slow: tuple[SlowProxy, LaunchedPage], request: pytest.FixtureRequest
) -> Iterator[Page]:
    page = chromium.new_page()
    page.set_viewport_size(DESKTOP)
    page.set_default_timeout(WAIT_MS)
    page.goto(slow[1].url)
    expect(page.locator("#server-banner")).to_contain_text("Server ready")
    yield page
    photograph([page], request.node.name)


def progress(tab: Page, line: str, scored: str = r"\d+") -> Any:
    """Gradio's progress of the tab's job, "Scoring: n/total passages", on the job's own line
    (Gradio's own "n/total passages | timer" text is hidden on purpose, so visible text only)."""
    return tab.locator(line).get_by_text(re.compile(rf"\b{scored}/\d+ passages")).filter(visible=True).first


def passages(locator: Any) -> tuple[int, int]:
    done, total = (int(number) for number in re.findall(r"\d+", locator.inner_text())[:2])
    return done, total


def status_line(tab: Page) -> Any:
    return tab.locator('#status [data-testid="markdown"]')


def test_a_long_job_shows_passages_scored_while_it_runs(tab: Page) -> None:
    paste(tab, "where is the market?", [*DOCUMENTS, LONG])
    tab.locator("#rerank-button").click()
    # Gradio's progress on the status line, first at 0, then moving as the batches return;
    # Gradio's own timer and ETA (taken from earlier jobs) are not shown.
    expect(progress(tab, "#status", "0")).to_be_visible()
    moving = progress(tab, "#status", r"[1-9]\d*")
    expect(moving).to_be_visible()
    done, total = passages(moving)
    assert 0 < done < total, moving.inner_text()
    timer = tab.locator("#status").get_by_text(re.compile(r"\d+(\.\d+)?(/\d+(\.\d+)?)?s$"))
    expect(timer.filter(visible=True)).to_have_count(0)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    tab.locator("#outputs").screenshot(path=ARTIFACTS / "progress.png")  # the line as a person sees it
    expect(status_line(tab)).to_contain_text("Ranked 5 documents")


def test_stop_returns_the_page_at_once_and_no_batch_follows(tab: Page, slow: tuple[SlowProxy, LaunchedPage]) -> None:
    proxy, _ = slow
    # Words of its own, so the long document's passages are new to the page's prepared cache.
    long = LONG.replace("river", "lake")
    paste(tab, "where is the lake?", [*DOCUMENTS, long])
    tab.locator("#rerank-button").click()
    expect(progress(tab, "#status", r"[1-9]\d*")).to_be_visible()
    # The next batch is held at the proxy: the job cannot end by itself while Stop is pressed.
    proxy.holding.set()
    try:
        wait_until(lambda: proxy.held > 0, "a batch held at the proxy")
        done, total = passages(progress(tab, "#status"))
        assert done < total
        tab.locator("#stop-button").click()
        expect(tab.locator("#rerank-button")).to_be_visible()
        expect(tab.locator("#stop-button")).to_be_hidden()
        expect(status_line(tab)).to_have_text("⏹️ Stopped; nothing was ranked.")
        expect(tab.locator('#results [role="gridcell"]')).to_have_count(0)
        # The job's slot is free: the page's own count, then the task itself gone.
        expect(tab.locator("#engine-summary")).to_contain_text(re.compile(r"Ranking: 0\s*Queued: 0"))
        assert proxy.held > 0, "the held batch was answered: Stop did not return the page at once"
        stopped_at = len(proxy.calls)
    finally:
        proxy.holding.clear()
    assert_nothing_follows(tab, proxy, stopped_at, long)


def test_evaluate_reads_judgments_and_shows_the_measures(
    tab: Page, tmp_path: Path, minilm_server: RunningServer
) -> None:
    paste(tab, "", DOCUMENTS)
    query = "what is the capital of China?"
    grades = {2: 2, 4: 1}  # doc_id (1-based position): grade
    judgments = tmp_path / "judgments.csv"
    judgments.write_text(
        "query,doc_id,grade\n" + "".join(f"{query},{doc},{grade}\n" for doc, grade in grades.items()),
        encoding="utf-8",
    )
    tab.get_by_text("Evaluate: is this ranking good?").click()
    tab.locator("#judgments input[type=file]").set_input_files(judgments)
    tab.locator("#evaluate-button").click()
    summary = tab.locator("#evaluation")
    expect(summary).to_contain_text("Evaluated 1 judged query")

    # nDCG@10 from the definition, for the input order and for the server's own ranking.
    model = httpx.get(f"{minilm_server.url}/v1/models", timeout=30).json()["data"][0]["id"]
    answer = httpx.post(
        f"{minilm_server.url}/v1/rerank", json={"model": model, "query": query, "documents": DOCUMENTS}, timeout=120
    ).json()
    reranked = [int(item["index"]) + 1 for item in answer["results"]]
    ideal = 2 + 1 / math.log2(3)

    def ndcg(order: list[int]) -> float:
        return sum(grades.get(doc, 0) / math.log2(rank + 1) for rank, doc in enumerate(order, 1)) / ideal

    before, after = ndcg([1, 2, 3, 4]), ndcg(reranked)
    expect(summary).to_contain_text(f"nDCG@10: input order {before:.3f} → reranked {after:.3f} ({after - before:+.3f})")
    cells = tab.locator("#evaluation-table [role='gridcell']").all_inner_texts()
    assert {"nDCG@10", "MRR@10", "Recall@10"} <= {cell.strip() for cell in cells}
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    tab.locator("#evaluate").screenshot(path=ARTIFACTS / "evaluate.png")


def test_an_evaluation_is_the_tabs_job_with_its_progress_and_stop(
    tab: Page, tmp_path: Path, slow: tuple[SlowProxy, LaunchedPage]
) -> None:
    proxy, _ = slow
    long = LONG.replace("river", "pond")
    paste(tab, "", [*DOCUMENTS, long])
    judgments = tmp_path / "judgments.csv"
    judgments.write_text("query,doc_id,grade\nwhere is the pond?,5,1\n", encoding="utf-8")
    tab.get_by_text("Evaluate: is this ranking good?").click()
    tab.locator("#judgments input[type=file]").set_input_files(judgments)
    tab.locator("#evaluate-button").click()
    # While it runs: its progress on the view's own line, Rerank is Stop, no second job starts.
    expect(progress(tab, "#evaluation", r"[1-9]\d*")).to_be_visible()
    expect(tab.locator("#stop-button")).to_be_visible()
    expect(tab.locator("#rerank-button")).to_be_hidden()
    expect(tab.locator("#evaluate-button")).to_be_disabled()
    expect(tab.locator("#engine-summary")).to_contain_text(re.compile(r"Ranking: 1\s*Queued: 0"))

    proxy.holding.set()
    try:
        wait_until(lambda: proxy.held > 0, "a batch held at the proxy")
        tab.locator("#stop-button").click()
        expect(tab.locator('#evaluation [data-testid="markdown"]')).to_have_text("⏹️ Stopped; nothing was evaluated.")
        expect(tab.locator("#rerank-button")).to_be_visible()
        expect(tab.locator("#evaluate-button")).to_be_enabled()
        expect(tab.locator("#engine-summary")).to_contain_text(re.compile(r"Ranking: 0\s*Queued: 0"))
        # Rerank's own line is not touched by the evaluation's Stop.
        expect(status_line(tab)).to_have_text("")
        stopped_at = len(proxy.calls)
    finally:
        proxy.holding.clear()
    assert_nothing_follows(tab, proxy, stopped_at, long)


def assert_nothing_follows(tab: Page, proxy: SlowProxy, stopped_at: int, stopped: str) -> None:
    """Run a two-document job after a Stop: it reaches the server, and no call after the Stop
    carries a passage of the stopped job's long document (its words are its own: lake/pond).
    Had the stopped job gone on, its next batches (one every half second at least) would reach
    the proxy while this job runs."""
    paste(tab, "what is the capital of China?", DOCUMENTS[:2])
    tab.locator("#rerank-button").click()
    expect(status_line(tab)).to_contain_text("Ranked 2 documents")
    later_calls = proxy.calls[stopped_at:]
    word = stopped.split()[0].rstrip("0123456789")
    assert later_calls, "the next job made no scoring call"
    assert not [text for call in later_calls for text in call if word in text], later_calls
