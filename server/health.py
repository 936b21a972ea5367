"""Wait until a vLLM server answers /health, or say clearly why it never will.

The one health wait: `python -m server wait`, bench/ and the tests' servers all use
`wait_healthy` (bench/ also for the page, with `path="/"` and its own `explain`).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from server.failures import diagnose, last_lines


class ServerNotReady(RuntimeError):
    """The server died or did not become healthy in time; str() is the one-line reason."""

    def __init__(self, reason: str, log_tail: str = "") -> None:
        super().__init__(reason)
        self.log_tail = log_tail


def is_healthy(url: str, timeout: float = 2.0, path: str = "/health") -> bool:
    try:
        return httpx.get(f"{url.rstrip('/')}{path}", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def wait_healthy(
    url: str,
    timeout: float,
    *,
    pid: int | None = None,
    alive: Callable[[], bool] | None = None,
    log_path: Path | None = None,
    progress: bool = True,
    interval: float = 1.0,
    path: str = "/health",
    explain: Callable[[str], str] = diagnose,
) -> float:
    """Poll `url` + `path` until 200; returns the seconds waited.

    `pid` or `alive` say whether the server process still runs: a dead server fails at
    once with the reason `explain` finds in this run's part of its log (vLLM's known
    failures by default) instead of waiting out the timeout.
    """
    if alive is None and pid is not None:
        alive = lambda: pid_alive(pid)  # noqa: E731
    start = time.monotonic()
    last_report = start
    while True:
        if is_healthy(url, path=path):
            if progress:
                print(f"\rserver healthy at {url} after {time.monotonic() - start:.0f} s", file=sys.stderr)
            return time.monotonic() - start
        elapsed = time.monotonic() - start
        if alive is not None and not alive():
            log_text = log_path.read_text(errors="replace") if log_path and log_path.is_file() else ""
            log_text = log_text[log_text.rfind("\n===== ") + 1 :]  # this run's part of the log
            raise ServerNotReady(
                f"server exited during startup: {explain(log_text)}" + _log_hint(log_path),
                last_lines(log_path),
            )
        if elapsed >= timeout:
            raise ServerNotReady(
                f"server at {url} not healthy after {timeout:.0f} s" + _log_hint(log_path),
                last_lines(log_path),
            )
        if progress and time.monotonic() - last_report >= 5:
            last_report = time.monotonic()
            # On a terminal the line counts up in place; in a log, one line each time.
            end = "" if sys.stderr.isatty() else "\n"
            print(f"\rwaiting for {url.rstrip('/')}{path} ... {elapsed:.0f} s", end=end, file=sys.stderr, flush=True)
        time.sleep(interval)


def _log_hint(log_path: Path | None) -> str:
    return f"; log: {log_path}" if log_path else ""
