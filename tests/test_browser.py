"""The page in a real browser: Debian's chromium, driven by Playwright, against real vLLM.

    .venv/bin/python -m pytest -m browser tests/test_browser.py

What gradio_client cannot see is checked here: the table as rendered, markup in a document
shown as text and never run, the highlighted query words, the GPU and engine panel, and the
one-line message for bad input. Scores in the DOM are compared with the server's own
/v1/rerank answer. Screenshots are kept in tests/artifacts/browser/.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import BrowserContext, Page, Playwright, expect, sync_playwright

from tests.support.server_process import REPO_ROOT, RunningServer, free_port
from webui.app import create_demo
from webui.settings import Settings

pytestmark = [pytest.mark.browser, pytest.mark.timeout(600)]

CHROMIUM = Path("/usr/bin/chromium")
# Without these, headless Chromium keeps trying to reach Google (updates, sync, QUIC probes).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
ARTIFACTS = REPO_ROOT / "tests" / "artifacts" / "browser"
WAIT_MS = 120_000
"""A rerank on a busy 2-core machine can take a while; every wait is on a selector or text."""

QUERY = "what is the capital of China?"
HOSTILE = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">'
DOCUMENTS = [
    "Paris is the capital of France.",
    "Beijing is the capital of China.",
    HOSTILE,
    "Tokyo is the capital of Japan.",
    "Shanghai is the largest city in China.",
]

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


@pytest.fixture(scope="module")
def page_url(minilm_server: RunningServer) -> Iterator[str]:
    settings = Settings(server_url=minilm_server.url, max_docs=20, timeout=120.0)
    demo = create_demo(settings)
    _, url, _ = demo.launch(prevent_thread_lock=True, server_port=free_port(), quiet=True)
    try:
        yield url
    finally:
        demo.close()


@pytest.fixture(scope="module")
def driver() -> Iterator[Playwright]:
    with sync_playwright() as playwright:
        yield playwright


@pytest.fixture(scope="module")
def browser(driver: Playwright, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    expect.set_options(timeout=WAIT_MS)
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package (tests/run.sh does)")
    context = driver.chromium.launch_persistent_context(
        tmp_path_factory.mktemp("chromium-profile"),  # fresh user-data dir: no state from earlier runs
        executable_path=str(CHROMIUM),
        headless=True,
        args=CHROMIUM_ARGS,
        viewport={"width": 1400, "height": 900},
    )
    try:
        yield context
    finally:
        context.close()


@pytest.fixture
def page(browser: BrowserContext, page_url: str, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh tab on the page, its banner saying the server is ready; a screenshot at the end."""
    tab = browser.new_page()
    tab.set_default_timeout(WAIT_MS)
    tab.goto(page_url)
    expect(tab.locator("#server-banner")).to_contain_text("Server ready", timeout=WAIT_MS)
    try:
        yield tab
    finally:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        tab.screenshot(path=ARTIFACTS / f"{request.node.name}.png", full_page=True)
        tab.close()


def paste(tab: Page, query: str, documents: list[str]) -> None:
    tab.get_by_label("Query", exact=True).fill(query)
    tab.get_by_label("Documents", exact=True).fill("\n".join(documents))
    expect(tab.locator("#doc-count")).to_contain_text(f"{len(documents)} documents")


def test_ranking_in_the_browser_equals_the_servers_and_runs_no_markup(page: Page, minilm_server: RunningServer) -> None:
    expected = server_ranking(minilm_server.url, QUERY, DOCUMENTS)
    paste(page, QUERY, DOCUMENTS)
    page.locator("#rerank-button").click()

    expect(page.locator('#status [data-testid="markdown"]')).to_contain_text(f"Ranked {len(DOCUMENTS)} documents")
    results = page.locator("#results")
    expect(results.locator('[role="gridcell"][data-col="0"]')).to_have_count(len(DOCUMENTS))
    rows = results.evaluate(READ_GRID)

    assert [row[0] for row in rows] == [str(rank) for rank in range(1, len(DOCUMENTS) + 1)]
    assert [int(row[4]) for row in rows] == [position + 1 for position, _ in expected]
    assert [float(row[1]) for row in rows] == [round(score, 4) for _, score in expected]
    assert [row[3] for row in rows] == [DOCUMENTS[position] for position, _ in expected]
    assert rows[0][3] == "Beijing is the capital of China."
    assert all(row[5] == "whole" for row in rows)

    # The query's words are highlighted in the rendered cells (and "what", "is", "the" are not).
    marked = {text.lower() for text in results.locator("mark").all_inner_texts()}
    assert marked == {"capital", "china"}

    # The hostile document is shown as its own text; nothing of it became an element or ran.
    hostile_row = next(row for row in rows if row[4] == str(DOCUMENTS.index(HOSTILE) + 1))
    assert hostile_row[3] == HOSTILE
    assert results.locator("script").count() == 0
    assert page.locator('img[src="x"]').count() == 0

    panel = page.locator("body")
    if host_has_nvidia_gpu():
        expect(panel).to_contain_text(re.compile(r"GPU 0 · .+ GiB"))
    else:
        expect(panel).to_contain_text("No NVIDIA GPU on this host")
    # The engine's lines are joined by <br>, which text content turns into nothing.
    expect(panel).to_contain_text(re.compile(r"Running: \d+\s*Waiting: \d+\s*KV cache: [\d.]+%"))

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=ARTIFACTS / "page.png", full_page=True)
    # Checked last, after the table has been on screen through the panel waits and the screenshot.
    assert page.evaluate("typeof window.__pwned") == "undefined"


def test_empty_query_shows_one_line_and_keeps_the_documents(page: Page) -> None:
    paste(page, "", DOCUMENTS)
    page.locator("#rerank-button").click()

    # The message itself, not Gradio's progress overlay that shares the block for a moment.
    message = page.locator('#status [data-testid="markdown"] p')
    expect(message).to_have_text("⚠️ Enter a query to rank the documents against.")
    expect(message).to_have_count(1)
    expect(page.get_by_label("Documents", exact=True)).to_have_value("\n".join(DOCUMENTS))
    expect(page.get_by_label("Query", exact=True)).to_have_value("")
    assert page.locator('#results [role="gridcell"]').count() == 0
