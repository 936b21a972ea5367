"""What the page itself knows about its Rerank jobs, read from Gradio's queue.

    load = page_load(demo, "rerank")   # PageLoad(running=1, waiting=2)
    queue_full(demo)                   # True when Gradio would answer "busy"

vLLM's running/waiting gauges trail the server by seconds (see bench/metrics_lag.py), so the
panel shows these counts beside them: they change the moment a job starts, waits or ends.
Gradio keeps them in private attributes of its queue (6.x: `Blocks._queue`, one `EventQueue`
per concurrency id with `.queue` and `.current_concurrency`); this module is the one place that
reads them, and it answers "unknown" rather than fail if a Gradio release renames them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PageLoad:
    running: int | None
    """Rerank jobs of this page being served now (None: Gradio's queue could not be read)."""
    waiting: int | None
    """Rerank jobs of this page waiting in its queue for a slot."""


def _queue(demo: Any) -> Any:
    return getattr(demo, "_queue", None)


def page_load(demo: Any, concurrency_id: str) -> PageLoad:
    queue = _queue(demo)
    per_id = getattr(queue, "event_queue_per_concurrency_id", None)
    if not isinstance(per_id, dict):
        return PageLoad(None, None)
    events = per_id.get(concurrency_id)
    if events is None:  # created at the first job
        return PageLoad(0, 0)
    running, waiting = getattr(events, "current_concurrency", None), getattr(events, "queue", None)
    if not isinstance(running, int) or not isinstance(waiting, list):
        return PageLoad(None, None)
    return PageLoad(running, len(waiting))


def queue_full(demo: Any) -> bool:
    """The rule Gradio applies when a job is submitted: waiting jobs of every function together
    at `max_size`. False when the queue cannot be read (Gradio's own check still holds)."""
    queue = _queue(demo)
    max_size = getattr(queue, "max_size", None)
    try:
        return isinstance(max_size, int) and len(queue) >= max_size
    except TypeError:
        return False
