"""A job's passages in batches bounded by tokens, sent a few at a time, with progress.

Why batches: one call for everything meets the page's timeout once a job is big (950
passages took a 2-core CPU 157-201 s), shows nothing until the end, and cannot be stopped
half way. So a job sends bounded batches, reports "passages scored / total" as each answer
comes back, and stops sending the moment it is cancelled (Gradio cancels the handler's task;
the calls in flight are dropped with their connections, and no later batch is sent).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from webui.passages import Passage
from webui.prepared import all_of

T = TypeVar("T")
Progress = Callable[[int, int], None]
"""Called with (passages scored, passages in the job) after each batch."""

IN_FLIGHT = 1
"""Batches of one job at the server at once. Two hide the gap between a job's calls (on the
2-core CPU 300 passages took 2.88 s of server time in two-at-a-time calls, 2.98 s one after
another), but they make the engine's steps twice as long for everyone else: a 2-document
rerank beside a long job then took 3.7x its idle time instead of 1.5x
(bench/results/session-cpu.md). Fairness first."""


def plan_batches(
    passages: Sequence[Passage], pair_overhead: int, max_tokens: int, max_docs: int
) -> list[list[Passage]]:
    """Consecutive passages, each batch at most `max_docs` passages and `max_tokens` tokens
    (a passage's tokens plus `pair_overhead`, what the server adds to each pair); a passage
    larger than `max_tokens` on its own goes alone."""
    batches: list[list[Passage]] = []
    current: list[Passage] = []
    weight = 0
    for passage in passages:
        cost = passage.tokens + pair_overhead
        if current and (weight + cost > max_tokens or len(current) >= max_docs):
            batches.append(current)
            current, weight = [], 0
        current.append(passage)
        weight += cost
    if current:
        batches.append(current)
    return batches


async def run_batches(
    batches: Sequence[Sequence[Passage]],
    call: Callable[[int, Sequence[Passage]], Awaitable[T]],
    on_progress: Progress,
    *,
    done_before: int = 0,
    total: int | None = None,
) -> list[T]:
    """`call(index, batch)` for each batch in order, at most IN_FLIGHT at once; the results
    in batch order. After each answer, on_progress(passages done, total), counting from
    `done_before` (passages the job did not need to send). Cancelling the caller cancels the
    calls in flight, and no later batch is started."""
    whole = sum(len(batch) for batch in batches) + done_before if total is None else total
    gate = asyncio.Semaphore(IN_FLIGHT)  # waiters are woken first come, first served: in order
    done = done_before

    async def one(index: int, batch: Sequence[Passage]) -> T:
        nonlocal done
        async with gate:
            result = await call(index, batch)
        done += len(batch)
        on_progress(done, whole)
        return result

    return await all_of([one(index, batch) for index, batch in enumerate(batches)])
