"""Resident memory of the page and of the server, found by the ports they listen on and sampled
with their child processes until told to stop.

    samples: list[tuple[float, int, int]] = []
    await sample_memory(listening_pid(7860), listening_pid(8000), 2.0, stop, samples)
    memory_summary(samples, warmup_s=20, column=1)   # the page's trend in MiB
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence

import psutil

from bench.stats import trend

MIB = 1024 * 1024


def listening_pid(port: int) -> int:
    for conn in psutil.net_connections("tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
            return int(conn.pid)
    raise SystemExit(f"error: nothing listens on port {port}")


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants (vLLM's API server, engine, workers)."""
    root = psutil.Process(pid)
    total = 0
    for process in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += process.memory_info().rss
    return total


async def sample_memory(
    page_pid: int, server_pid: int, interval: float, stop: asyncio.Event, samples: list[tuple[float, int, int]]
) -> None:
    started = time.monotonic()
    while not stop.is_set():
        samples.append((time.monotonic() - started, tree_rss(page_pid), tree_rss(server_pid)))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)


def memory_summary(samples: Sequence[tuple[float, int, int]], warmup_s: float, column: int) -> dict[str, float]:
    """Column 1 (page) or 2 (server) in MiB: the first and last fifth after warm-up compared,
    and the slope by least squares."""
    found = trend([(t, values[column - 1] / MIB) for t, *values in samples], warmup_s)
    return {
        "early_mib": round(found["early"], 1),
        "late_mib": round(found["late"], 1),
        "growth_mib": round(found["growth"], 1),
        "max_mib": round(found["max"], 1),
        "slope_mib_per_min": round(found["slope_per_min"], 2),
    }
