"""vLLM's startup phases, read from its log lines as they arrive, for a console a person reads.

vLLM logs hundreds of lines while it starts; a person wants to know which stage it is in
and for how long. The markers are vLLM 0.26-0.32's own messages (CPU and CUDA builds).
"""

from __future__ import annotations

import re
import threading
import time

PHASES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("starting its engine", re.compile(r"Initializing a V1 LLM engine")),
    ("loading the model", re.compile(r"Starting to load model|Loading weights took|Loading safetensors")),
    (
        "warming up",  # and compiling, unless --enforce-eager: StartupProgress says which
        re.compile(r"Warming up model|Compiling a graph|Dynamo bytecode transform"),
    ),
    ("capturing CUDA graphs", re.compile(r"Capturing CUDA graphs")),
)
"""(what the console says, the log line that starts it), in the order vLLM goes through them."""


class StartupProgress:
    """Fed vLLM's log lines by the thread that copies them; read by the supervisor's loop.

    A phase only moves forward: a late "Loading ..." line never takes the console back.
    """

    def __init__(self, compiles: bool = True) -> None:
        self.compiles = compiles
        """vLLM compiles the model during warm-up unless it runs with --enforce-eager."""
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._phase = -1
        self._reported = -1

    def restart(self) -> None:
        with self._lock:
            self._started = time.monotonic()
            self._phase = -1
            self._reported = -1

    def feed(self, line: str) -> None:
        for index, (_, pattern) in enumerate(PHASES):
            if index > self._phase and pattern.search(line):
                with self._lock:
                    self._phase = max(self._phase, index)
                return

    def elapsed(self) -> float:
        return time.monotonic() - self._started

    def news(self) -> str | None:
        """The phase entered since the last call, as 'compiling (38 s)'; None if none."""
        with self._lock:
            if self._phase == self._reported:
                return None
            self._reported = self._phase
            name = PHASES[self._phase][0]
            if name == "warming up" and self.compiles:
                name = "compiling and warming up"
            return f"{name} ({self.elapsed():.0f} s)"
