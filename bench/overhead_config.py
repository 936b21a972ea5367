"""What `python -m bench.cpu_overhead` measures, and how: one frozen config with a why per field."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
QUERY = "which national research university studies the river water and energy policy of the city?"
"""The one query every timed request ranks the documents against."""


@dataclass(frozen=True)
class OverheadConfig:
    docs: int = 20
    """Documents per request: the page's typical paste, and the field notes' CPU measurement."""

    words: int = 200
    """Words per document: about 200 MiniLM tokens, inside the cpu profile's 256-token window."""

    seed: int = 0
    """Fixed, so every run ranks the same texts."""

    repeats: int = 20
    """Timed requests per path; enough for a stable median and a p95 of a sort."""

    warmup: int = 3
    """Untimed requests per path first: compiled graphs, connection pools and caches settle."""

    target_percent: float = 5.0
    """The page may add at most this much to the server's own median."""

    out_dir: Path = REPO / "bench" / "results"
    """Where cpu-overhead.md and cpu-overhead.json go (committed)."""

    log_dir: Path = REPO / "logs"
    """vLLM's and the page's logs, for a failed run (not committed)."""

    startup_timeout_s: float = 900.0
    """vLLM's first start compiles; on 2 busy cores that has taken several minutes."""

    max_load: float = 2.5
    """Each timed phase waits for the 1-min load average to fall to this: other jobs on a
    shared 2-core host move every number (it is recorded either way)."""

    quiet_wait_s: float = 600.0
    """How long a phase waits for that before it runs anyway."""
