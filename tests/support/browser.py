"""Debian's Chromium under Playwright, the one way the tests and the screenshot script open it.

    with sync_playwright() as playwright:
        context = open_chromium(playwright, profile_dir)
        tab = context.new_page(); tab.set_viewport_size(DESKTOP)

`playwright install` cannot download browsers here, so Playwright drives /usr/bin/chromium;
without it `chromium_path()` raises ChromiumMissing with one line saying what to install.
"""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import BrowserContext, Playwright, ViewportSize

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
