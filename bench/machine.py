"""The host a figure was measured on, and waiting for it to be quiet enough to measure.

    cpu_model(), ram_gib(), package_versions(["torch", "gradio"]), wait_for_quiet(2.5, 600)

Every benchmark states its machine with its figures; on a shared host it also records the
load average, since other jobs on the same cores move every number.
"""

from __future__ import annotations

import contextlib
import os
import platform
import time
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path


def _cpuinfo_field(name: str) -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(name):
                return line.split(":", 1)[1].strip()
    return ""


def cpu_model() -> str:
    return _cpuinfo_field("model name") or platform.processor() or "unknown"


def has_cpu_flag(flag: str) -> bool:
    return flag in _cpuinfo_field("flags").split()


def ram_gib() -> float:
    meminfo = Path("/proc/meminfo").read_text().split()
    return round(int(meminfo[meminfo.index("MemTotal:") + 1]) / 1024**2, 1)


def package_versions(names: Iterable[str]) -> dict[str, str]:
    """Installed versions of the packages that are installed, in the order asked."""
    found = {}
    for name in names:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[name] = metadata.version(name)
    return found


def load_average() -> float:
    """The 1-minute load average, rounded as the reports print it."""
    return round(os.getloadavg()[0], 2)


def wait_for_quiet(max_load: float, timeout_s: float) -> float:
    """The 1-min load average once it is at most `max_load`, or when `timeout_s` has passed."""
    deadline = time.monotonic() + timeout_s
    while load_average() > max_load and time.monotonic() < deadline:
        time.sleep(10)
    return load_average()


def host_facts() -> dict[str, object]:
    """What a CPU figure needs said about its machine."""
    return {
        "cpu_model": cpu_model(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "ram_gib": ram_gib(),
        "avx512_bf16": has_cpu_flag("avx512_bf16"),
        "python": platform.python_version(),
        "kernel": platform.release(),
    }
