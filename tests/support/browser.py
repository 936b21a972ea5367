"""Debian's Chromium under Playwright, the one way the tests and the screenshot script open it.

    with sync_playwright() as playwright:
        context = open_chromium(playwright, profile_dir)
        tab = context.new_page(); tab.set_viewport_size(DESKTOP)

    with chromium_for_tests(profile_dir) as context:   # a browser test module's fixture
        ...

`playwright install` cannot download browsers here, so Playwright drives /usr/bin/chromium;
without it `chromium_path()` raises ChromiumMissing with one line saying what to install, and
`chromium_for_tests` fails the test with that line. The helpers below it (paste, photograph)
are shared by every browser test module, so none imports another.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, Page, Playwright, ViewportSize, expect, sync_playwright

from tests.support.server_process import REPO_ROOT

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
DESKTOP = ViewportSize(width=1400, height=900)
"""A laptop-sized desk screen: query, Rerank and the top of the ranking must fit in it."""
PHONE = ViewportSize(width=390, height=844)
"""An iPhone 12-15 in portrait, in CSS pixels."""


class ChromiumMissing(RuntimeError):
    pass


def chromium_path() -> Path:
    if not CHROMIUM.is_file():
        raise ChromiumMissing(f"{CHROMIUM} is missing: install Debian's chromium package (tests/run.sh does)")
    return CHROMIUM


def open_chromium(playwright: Playwright, profile_dir: Path, viewport: ViewportSize = DESKTOP) -> BrowserContext:
    """Headless Chromium with a fresh profile (nothing from an earlier run is loaded)."""
    return playwright.chromium.launch_persistent_context(
        profile_dir,
        executable_path=str(chromium_path()),
        headless=True,
        args=CHROMIUM_ARGS,
        viewport=viewport,
    )


# --- for the browser tests ------------------------------------------------------------------

ARTIFACTS = REPO_ROOT / "tests" / "artifacts" / "browser"
"""Each test's tabs are photographed here at its end (and the README's Evaluate picture)."""
WAIT_MS = 120_000
"""A rerank on a busy 2-core machine can take a while; every wait is on a selector or text."""


@contextlib.contextmanager
def chromium_for_tests(profile_dir: Path) -> Iterator[BrowserContext]:
    """One Chromium for a test module; without Debian's chromium every browser test fails here,
    the same way, with the line saying what to install."""
    try:
        chromium_path()
    except ChromiumMissing as missing:
        pytest.fail(str(missing))
    expect.set_options(timeout=WAIT_MS)
    with sync_playwright() as playwright:
        context = open_chromium(playwright, profile_dir)
        try:
            yield context
        finally:
            context.close()


def paste(tab: Page, query: str, documents: list[str]) -> None:
    """Type the query and the documents (one per line); wait until the count line has them."""
    tab.get_by_label("Query", exact=True).fill(query)
    tab.get_by_label("Documents", exact=True).fill("\n".join(documents))
    expect(tab.locator("#doc-count")).to_contain_text(f"{len(documents)} document")


def photograph(tabs: Iterable[Page], test_name: str) -> None:
    """Each tab's whole page as the test left it (passed or failed), then the tab closed."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for number, tab in enumerate(tabs):
        with contextlib.suppress(Exception):
            tab.screenshot(path=ARTIFACTS / f"{test_name}-{number}.png", full_page=True)
        tab.close()
