"""The analyst's session in a real browser: a long job's progress, and the Evaluate view.

    .venv/bin/python -m pytest -m browser tests/test_browser_session.py

Debian's chromium through Playwright (the same browser set-up as tests/test_browser.py),
against the real MiniLM server. A proxy in front of the server holds each /v1/rerank call a
moment, so the progress of a long job is on screen long enough to be read. The Evaluate
view's screenshot is kept in tests/artifacts/browser/evaluate.png (README's picture).
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import BrowserContext, Page, Playwright, expect, sync_playwright
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.support.page import forward, serving
from tests.support.server_process import RunningServer, free_port
from tests.test_browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, WAIT_MS, paste
from webui.app import create_demo
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


@pytest.fixture(scope="module")
def page_url(minilm_server: RunningServer) -> Iterator[str]:
    async def slow(request: Request) -> Response:
        if request.url.path == "/v1/rerank":
            await asyncio.sleep(0.5)
        return await forward(request, minilm_server.url, timeout=60)

    app = Starlette(routes=[Route("/{path:path}", slow, methods=["GET", "POST"])])
    with serving(app) as proxy_url:
        settings = Settings(server_url=proxy_url, max_docs=20, timeout=120.0, batch_tokens=300)
        demo = create_demo(settings)
        _, url, _ = demo.launch(prevent_thread_lock=True, server_port=free_port(), quiet=True)
        try:
            yield url
        finally:
            demo.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    expect.set_options(timeout=WAIT_MS)
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package (tests/run.sh does)")
    with sync_playwright() as driver:
        context = launch(driver, tmp_path_factory.mktemp("chromium-profile"))
        try:
            yield context
        finally:
            context.close()


def launch(driver: Playwright, profile: Path) -> BrowserContext:
    return driver.chromium.launch_persistent_context(
        profile,
        executable_path=str(CHROMIUM),
        headless=True,
        args=CHROMIUM_ARGS,
        viewport={"width": 1400, "height": 1100},
    )


@pytest.fixture
def tab(browser: BrowserContext, page_url: str) -> Iterator[Page]:
    page = browser.new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(page_url)
    expect(page.locator("#server-banner")).to_contain_text("Server ready")
    try:
        yield page
    finally:
        page.close()


def test_a_long_job_shows_passages_scored_while_it_runs(tab: Page) -> None:
    paste(tab, "where is the market?", [*DOCUMENTS, LONG])
    tab.locator("#rerank-button").click()
    # Gradio's progress, "n/total passages", first at 0, then moving as the batches return.
    expect(tab.get_by_text(re.compile(r"^0/\d+ passages")).first).to_be_visible()
    moving = tab.get_by_text(re.compile(r"^[1-9]\d*/\d+ passages")).first
    expect(moving).to_be_visible()
    done, total = (int(number) for number in re.findall(r"\d+", moving.inner_text())[:2])
    assert 0 < done < total, moving.inner_text()
    expect(tab.locator('#status [data-testid="markdown"]')).to_contain_text("Ranked 5 documents")


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
