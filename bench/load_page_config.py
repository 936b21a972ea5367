"""What `python -m bench.load_page` drives: one frozen config with a why per field."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LoadConfig:
    page_url: str = "http://127.0.0.1:7860/"
    """The page, as a browser opens it."""
    server_url: str = "http://127.0.0.1:8000"
    """The vLLM server behind the page: the reference answers come straight from it."""
    users: int = 50
    """Concurrent users; the page's default capacity is 4 running + 32 waiting."""
    duration_s: float = 180.0
    """How long users keep submitting; answers still pending at the end are awaited."""
    documents: int = 20
    """Documents per request: a typical pasted list."""
    words: int = 60
    """Words per document: a paragraph."""
    workloads: int = 12
    """Distinct (query, documents) inputs, cycled through by the users."""
    think_s: float = 1.0
    """A user pauses up to this long (uniformly) between an answer and the next request."""
    busy_retry_s: float = 2.0
    """A refused user waits this long before trying again, as a person reading "busy" would."""
    viewer_ticks: bool = True
    """Also send each open tab's timer ticks (banner every 5 s, monitor panel every 1 s)."""
    sample_s: float = 2.0
    """Interval of the memory samples."""
    warmup_s: float = 20.0
    """Memory growth is judged after this: caches, pools and threads fill up first."""
    rounds: int = 1
    """Rounds of `duration_s` against the same processes: memory is judged on the last, once warm."""
    seed: int = 7
