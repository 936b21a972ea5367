"""Live GPU memory from NVML, read by one background thread for every viewer.

    with GpuSampler() as sampler:
        snapshot = sampler.snapshot()   # cheap: returns the latest immutable sample

Every open tab asks `snapshot()` once a second; only the sampler thread talks to NVML, so
N viewers cost the same NVML reads as one. Memory comes from `nvmlDeviceGetMemoryInfo` v2,
whose `used` leaves out driver-reserved memory and so matches `nvidia-smi`; v1 is the
fallback for old drivers. GPU processes are labelled with psutil, and those whose name or
command line mentions vLLM (its engine core retitles itself `VLLM::EngineCore`) are marked
as vLLM: the page knows the server by its URL only, never by a pid.

Without an NVIDIA driver (or without nvidia-ml-py) snapshots say `available=False` with the
reason in plain words; nothing raises.

NVML itself is opened, read and shut down by server/nvml.py, a dependency-free leaf module that
the server and bench/ use too: the page imports that one module from server/, nothing else.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from server.nvml import (
    NvmlDevice,
    NvmlUnavailable,
    nvml_session,
    open_devices,
    read_memory,
    read_processes,
    read_utilization,
)


@dataclass(frozen=True)
class GpuSamplerConfig:
    interval_s: float = 1.0
    """Seconds between NVML reads: the panel refreshes once a second, faster buys nothing."""

    history_s: float = 300.0
    """Seconds of memory history kept for the plot: five minutes shows a load test's shape."""


@dataclass(frozen=True)
class GpuProcess:
    pid: int
    name: str
    used_bytes: int | None
    """None where NVML cannot say (no permission, some virtualised GPUs)."""
    is_vllm: bool


@dataclass(frozen=True)
class GpuDevice:
    index: int
    name: str
    used_bytes: int
    total_bytes: int
    utilization_percent: int | None
    """None where the GPU does not report utilisation (MIG slices, some vGPUs)."""
    processes: tuple[GpuProcess, ...] = ()
    processes_error: str | None = None
    """Why the process list is unknown, e.g. "Insufficient Permissions"."""


@dataclass(frozen=True)
class HistoryPoint:
    timestamp: float
    used_bytes: tuple[int, ...]
    """Used memory per GPU, in device-index order."""


@dataclass(frozen=True)
class GpuSnapshot:
    timestamp: float
    available: bool
    reason: str
    """Why `available` is False, in words a user understands; empty when available."""
    devices: tuple[GpuDevice, ...] = ()
    history: tuple[HistoryPoint, ...] = ()
    device_names: tuple[str, ...] = ()
    """Names of the GPUs that `history` columns refer to, in device-index order."""

    @property
    def vllm_processes(self) -> tuple[tuple[int, GpuProcess], ...]:
        """(device index, process) for every GPU process attributed to vLLM."""
        return tuple(
            (device.index, process) for device in self.devices for process in device.processes if process.is_vllm
        )

    @property
    def vllm_used_bytes(self) -> int | None:
        """GPU memory of all vLLM processes, or None where NVML reported none of them."""
        sizes = [p.used_bytes for _, p in self.vllm_processes if p.used_bytes is not None]
        return sum(sizes) if sizes else None


@dataclass(frozen=True)
class _ProcessLabel:
    name: str
    is_vllm: bool


@dataclass
class _ProcessLabeller:
    """Names GPU processes and marks vLLM's; caches per pid while the pid stays on the GPU."""

    nvml: Any
    cache: dict[int, _ProcessLabel] = field(default_factory=dict)

    def label(self, pid: int) -> _ProcessLabel:
        cached = self.cache.get(pid)
        if cached is None:
            cached = self.cache[pid] = self._describe(pid)
        return cached

    def forget_except(self, live_pids: Iterable[int]) -> None:
        live = set(live_pids)
        for pid in [pid for pid in self.cache if pid not in live]:
            del self.cache[pid]

    def _describe(self, pid: int) -> _ProcessLabel:
        try:
            import psutil
        except ImportError:
            return self._describe_with_nvml(pid)
        try:
            process = psutil.Process(pid)
            name = process.name()
            cmdline = " ".join(process.cmdline())
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            # NVML reports host pids; a page inside a container may not see them.
            return self._describe_with_nvml(pid)
        is_vllm = _names_vllm_program(name) or _names_vllm_program(cmdline)
        return _ProcessLabel(name=name or f"pid {pid}", is_vllm=is_vllm)

    def _describe_with_nvml(self, pid: int) -> _ProcessLabel:
        try:
            name = str(self.nvml.nvmlSystemGetProcessName(pid))
        except self.nvml.NVMLError:
            return _ProcessLabel(name=f"pid {pid}", is_vllm=False)
        return _ProcessLabel(name=name, is_vllm=_names_vllm_program(name))


_VLLM_PROGRAM = re.compile(r"(?:^|[\s/])vllm(?:$|[\s.:])", re.IGNORECASE)
"""vLLM as a program, not a substring: its processes' titles (`VLLM::EngineCore`), the `vllm`
executable, or a `vllm.` module run with -m. A process that only mentions vllm inside a word (a
notebook `compare_vllm_runs`, a test named after vLLM in its title) is not vLLM."""


def _names_vllm_program(text: str) -> bool:
    return _VLLM_PROGRAM.search(text) is not None


class GpuSampler:
    """One daemon thread that samples NVML every `interval_s` and keeps a bounded history."""

    def __init__(
        self,
        config: GpuSamplerConfig | None = None,
        *,
        nvml: Any | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`nvml` replaces the `pynvml` module (tests pass a fake); `clock` stamps samples."""
        self.config = config or GpuSamplerConfig()
        if self.config.interval_s <= 0 or self.config.history_s <= 0:
            raise ValueError("GPU sampler interval and history must be positive seconds")
        self.nvml_reads = 0
        """Sampling passes made so far; each pass reads NVML once for every GPU."""
        self._nvml = nvml
        self._clock = clock
        self._history: deque[HistoryPoint] = deque(maxlen=self.history_length)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._snapshot = GpuSnapshot(timestamp=clock(), available=False, reason="GPU sampler has not started yet")

    @property
    def history_length(self) -> int:
        """Most samples kept: enough points to cover `history_s` at `interval_s`."""
        return max(1, round(self.config.history_s / self.config.interval_s))

    def snapshot(self) -> GpuSnapshot:
        with self._lock:
            return self._snapshot

    def start(self) -> Self:
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return self
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="gpu-sampler", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout_s)

    @property
    def running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _publish(self, snapshot: GpuSnapshot) -> None:
        with self._lock:
            self._snapshot = snapshot

    def _unavailable(self, reason: str, names: tuple[str, ...] = ()) -> GpuSnapshot:
        return GpuSnapshot(
            timestamp=self._clock(),
            available=False,
            reason=reason,
            history=tuple(self._history),
            device_names=names,
        )

    def _run(self) -> None:
        try:
            with nvml_session(self._nvml) as nvml:
                self._sample_until_stopped(nvml)
        except NvmlUnavailable as error:
            if error.bindings_missing:
                self._publish(self._unavailable(f"GPU memory cannot be read: {error}"))
            else:
                self._publish(self._unavailable(f"No NVIDIA GPU on this host ({error})"))
        except Exception as error:  # a dead sampler must say so instead of showing old numbers
            logging.getLogger(__name__).exception("GPU sampler stopped")
            self._publish(self._unavailable(f"GPU sampler stopped: {error}"))

    def _sample_until_stopped(self, nvml: Any) -> None:
        try:
            devices = open_devices(nvml)
        except nvml.NVMLError as error:
            self._publish(self._unavailable(f"NVML could not list the GPUs: {error}"))
            return
        if not devices:
            self._publish(self._unavailable("The NVIDIA driver is loaded but sees no GPU"))
            return
        names = tuple(device.name for device in devices)
        labeller = _ProcessLabeller(nvml=nvml)
        while True:
            try:
                self._publish(self._sample(nvml, devices, labeller))
            except nvml.NVMLError as error:
                # A transient failure (GPU busy resetting) must not end the sampler.
                self._publish(self._unavailable(f"NVML read failed: {error}", names))
            if self._stop.wait(self.config.interval_s):
                return

    def _sample(self, nvml: Any, devices: list[NvmlDevice], labeller: _ProcessLabeller) -> GpuSnapshot:
        self.nvml_reads += 1
        readings = tuple(_read_device(nvml, device, labeller) for device in devices)
        labeller.forget_except(p.pid for reading in readings for p in reading.processes)
        now = self._clock()
        self._history.append(HistoryPoint(timestamp=now, used_bytes=tuple(r.used_bytes for r in readings)))
        return GpuSnapshot(
            timestamp=now,
            available=True,
            reason="",
            devices=readings,
            history=tuple(self._history),
            device_names=tuple(device.name for device in devices),
        )


def _read_labelled_processes(
    nvml: Any, device: NvmlDevice, labeller: _ProcessLabeller
) -> tuple[tuple[GpuProcess, ...], str | None]:
    try:
        used_by_pid = read_processes(nvml, device)
    except nvml.NVMLError as error:
        return (), str(error)
    processes = []
    for pid, used in used_by_pid.items():
        label = labeller.label(pid)
        processes.append(GpuProcess(pid=pid, name=label.name, used_bytes=used, is_vllm=label.is_vllm))
    processes.sort(key=lambda p: (p.used_bytes or 0, -p.pid), reverse=True)
    return tuple(processes), None


def _read_device(nvml: Any, device: NvmlDevice, labeller: _ProcessLabeller) -> GpuDevice:
    used, total = read_memory(nvml, device)
    processes, processes_error = _read_labelled_processes(nvml, device, labeller)
    return GpuDevice(
        index=device.index,
        name=device.name,
        used_bytes=used,
        total_bytes=total,
        utilization_percent=read_utilization(nvml, device),
        processes=processes,
        processes_error=processes_error,
    )
