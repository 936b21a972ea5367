"""Device memory through NVML, sampled by one thread: the idle level and the peak of each phase.

    with MemorySampler() as sampler:
        sampler.phase("startup")   # samples from now on count towards "startup"
        ...
        sampler.phase("load")
        ...
        sampler.peak_mib("startup"), sampler.idle_mib

NVML is opened and read through server/nvml.py: `used` comes from nvmlDeviceGetMemoryInfo
v2 where the driver has it (it leaves out driver-reserved memory, as nvidia-smi does), else
v1. Those peaks are whole-device readings, so nothing else may run on the GPU while a
configuration is measured that way. Servers side by side on one GPU are measured instead by
their own processes' memory (NVML's per-process list, summed over the process tree):

    sampler.track("qwen3-4b:load", server_pid)   # peak of that tree's memory from now on
    ...
    sampler.untrack("qwen3-4b:load"); sampler.process_peak_mib("qwen3-4b:load")

Without NVML (a CPU host) every reading is None and nothing raises.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import psutil

from server.nvml import NvmlDevice, as_text, nvml_session, open_device, read_memory, read_processes

MIB = 1 << 20
TREE_REFRESH_S = 1.0
"""How often a tracked server's process tree is listed again (vLLM starts its engine late)."""


@dataclass(frozen=True)
class DeviceInfo:
    name: str
    driver: str
    total_mib: int
    cuda_driver: str


class MemorySampler:
    def __init__(self, device_index: int = 0, interval_s: float = 0.02) -> None:
        self.device_index = device_index
        self.interval_s = interval_s
        self._nvml: Any = None
        self._device: NvmlDevice | None = None
        self._session = contextlib.ExitStack()
        self._lock = threading.Lock()
        self._phase: str | None = None
        self._peaks: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.idle_mib: int | None = None
        self._tracked: dict[str, int] = {}
        """key -> root pid of a process tree whose own memory is followed."""
        self._trees: dict[int, tuple[float, set[int]]] = {}
        self._process_peaks: dict[str, int] = {}

    def __enter__(self) -> MemorySampler:
        try:
            nvml = self._session.enter_context(nvml_session())
            self._device = open_device(nvml, self.device_index)
        except Exception:  # no driver, no GPU or no nvidia-ml-py: readings stay None
            self._session.close()
            return self
        self._nvml = nvml
        self._thread = threading.Thread(target=self._run, name="nvml-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._session.close()

    @property
    def available(self) -> bool:
        return self._nvml is not None

    def used_mib(self) -> int | None:
        if self._nvml is None or self._device is None:
            return None
        return read_memory(self._nvml, self._device)[0] // MIB

    def device_info(self) -> DeviceInfo | None:
        if self._nvml is None or self._device is None:
            return None
        nvml = self._nvml
        cuda = nvml.nvmlSystemGetCudaDriverVersion_v2()
        return DeviceInfo(
            name=self._device.name,
            driver=as_text(nvml.nvmlSystemGetDriverVersion()),
            total_mib=read_memory(nvml, self._device)[1] // MIB,
            cuda_driver=f"{cuda // 1000}.{cuda % 1000 // 10}",
        )

    def measure_idle(self, seconds: float = 1.0) -> int | None:
        """The quiet level that peaks are reported above (the lowest of a second's readings)."""
        readings = []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            used = self.used_mib()
            if used is None:
                return None
            readings.append(used)
            time.sleep(self.interval_s)
        self.idle_mib = min(readings)
        return self.idle_mib

    def wait_until_idle(self, timeout_s: float = 60.0, slack_mib: int = 512) -> bool:
        """After a server stops, wait for its memory to come back (True if it did)."""
        if self.idle_mib is None:
            return True
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            used = self.used_mib()
            if used is not None and used <= self.idle_mib + slack_mib:
                return True
            time.sleep(0.5)
        return False

    def phase(self, name: str | None) -> None:
        """Samples from now on count towards `name` (None: towards nothing)."""
        with self._lock:
            self._phase = name
            if name is not None:
                self._peaks[name] = 0  # a phase name reused by the next server starts afresh

    def peak_mib(self, name: str) -> int | None:
        """Highest reading of the phase, above the idle level."""
        with self._lock:
            peak = self._peaks.get(name)
        if peak is None or self.idle_mib is None:
            return None
        return max(0, peak - self.idle_mib)

    def track(self, key: str, root_pid: int) -> None:
        """From now on also record, under `key`, the peak of the memory that `root_pid` and its
        descendants hold themselves (NVML's per-process readings, not the device's)."""
        with self._lock:
            self._tracked[key] = root_pid
            self._process_peaks.pop(key, None)

    def untrack(self, key: str) -> None:
        with self._lock:
            self._tracked.pop(key, None)

    def process_peak_mib(self, key: str) -> int | None:
        """Highest reading of a tracked tree; None if NVML never listed one of its processes
        (no NVML, or a driver that reports pids of another namespace)."""
        with self._lock:
            peak = self._process_peaks.get(key)
        return None if peak is None else peak // MIB

    def _tree(self, root_pid: int, now: float) -> set[int]:
        listed_at, pids = self._trees.get(root_pid, (0.0, set()))
        if now - listed_at < TREE_REFRESH_S:
            return pids
        try:
            root = psutil.Process(root_pid)
            pids = {root_pid, *(child.pid for child in root.children(recursive=True))}
        except psutil.Error:  # the server has stopped: keep what it was
            pass
        self._trees[root_pid] = (now, pids)
        return pids

    def _read_tracked(self) -> None:
        with self._lock:
            tracked = dict(self._tracked)
        if not tracked or self._nvml is None or self._device is None:
            return
        try:
            used_by_pid = read_processes(self._nvml, self._device)
        except self._nvml.NVMLError:
            return
        now = time.monotonic()
        for key, root_pid in tracked.items():
            readings = [used_by_pid.get(pid) for pid in self._tree(root_pid, now)]
            known = [used for used in readings if used is not None]
            if not known:
                continue
            total = sum(known)
            with self._lock:
                if key in self._tracked:
                    self._process_peaks[key] = max(self._process_peaks.get(key, 0), total)

    def _run(self) -> None:
        for tick in itertools.count():
            if self._stop.is_set():
                return
            used = self.used_mib()
            with self._lock:
                if used is not None and self._phase is not None:
                    self._peaks[self._phase] = max(self._peaks.get(self._phase, 0), used)
            if tick % 5 == 0:  # the process list is dearer than the device reading
                self._read_tracked()
            self._stop.wait(self.interval_s)
