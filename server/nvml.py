"""NVML (nvidia-ml-py), opened in a context manager and always shut down: the one place that calls it.

    with nvml_session() as nvml:             # NvmlUnavailable says why there is no NVML
        for device in open_devices(nvml):
            used, total = read_memory(nvml, device)

Three callers: server/hardware.py (which GPUs the host has), webui/gpu.py (the page's live
memory panel) and bench/gpu_memory.py (memory peaks during a benchmark). This is a leaf
module: nothing from the rest of server/ and only nvidia-ml-py, imported when a session
opens, so the page imports it without needing vLLM's environment.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


class NvmlUnavailable(RuntimeError):
    """No NVML here; str() says why in a few words."""

    def __init__(self, reason: str, *, bindings_missing: bool = False) -> None:
        super().__init__(reason)
        self.bindings_missing = bindings_missing
        """True when nvidia-ml-py is not installed; False when NVML itself refused to start."""


@dataclass
class NvmlDevice:
    index: int
    handle: Any
    name: str
    memory_v2: bool = True
    """Cleared after the first v2 memory read this driver lacks: v1 from then on."""


@contextlib.contextmanager
def nvml_session(nvml: Any | None = None) -> Iterator[Any]:
    """nvmlInit on entry, nvmlShutdown in `finally`; yields the module to call.

    `nvml` replaces the `pynvml` module (the page's tests pass one with its calls faked).
    """
    if nvml is None:
        try:
            nvml = importlib.import_module("pynvml")
        except ImportError:
            raise NvmlUnavailable("nvidia-ml-py is not installed", bindings_missing=True) from None
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as error:
        raise NvmlUnavailable(f"NVML: {error}") from None
    try:
        yield nvml
    finally:
        with contextlib.suppress(nvml.NVMLError):
            nvml.nvmlShutdown()


def open_device(nvml: Any, index: int) -> NvmlDevice:
    handle = nvml.nvmlDeviceGetHandleByIndex(index)
    return NvmlDevice(index=index, handle=handle, name=as_text(nvml.nvmlDeviceGetName(handle)))


def open_devices(nvml: Any) -> list[NvmlDevice]:
    return [open_device(nvml, index) for index in range(nvml.nvmlDeviceGetCount())]


def as_text(value: str | bytes) -> str:
    """NVML strings: bindings before 11.515 returned bytes."""
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


_MEMORY_V2_UNSUPPORTED = (
    "NVML_ERROR_FUNCTION_NOT_FOUND",
    "NVML_ERROR_NOT_SUPPORTED",
    "NVML_ERROR_ARGUMENT_VERSION_MISMATCH",
)


def read_memory(nvml: Any, device: NvmlDevice) -> tuple[int, int]:
    """(used, total) bytes. v2's `used` leaves out driver-reserved memory, as nvidia-smi does;
    v1 is the fallback for drivers without v2."""
    version = getattr(nvml, "nvmlMemory_v2", None)
    if device.memory_v2 and version is not None:
        try:
            info = nvml.nvmlDeviceGetMemoryInfo(device.handle, version=version)
            return int(info.used), int(info.total)
        except nvml.NVMLError as error:
            # Only "this driver has no v2" means v1 from now on; a transient failure
            # (GPU lost, timeout) must fail this read, not switch the numbers' meaning.
            unsupported = {getattr(nvml, name, None) for name in _MEMORY_V2_UNSUPPORTED}
            if getattr(error, "value", None) not in unsupported:
                raise
            device.memory_v2 = False
    info = nvml.nvmlDeviceGetMemoryInfo(device.handle)
    return int(info.used), int(info.total)


def read_utilization(nvml: Any, device: NvmlDevice) -> int | None:
    """GPU busy percent, or None where the GPU does not report it (MIG slices, some vGPUs)."""
    try:
        return int(nvml.nvmlDeviceGetUtilizationRates(device.handle).gpu)
    except nvml.NVMLError:
        return None


def read_processes(nvml: Any, device: NvmlDevice) -> dict[int, int | None]:
    """Used bytes per pid of the compute and graphics processes (None where NVML cannot say).

    Raises NVMLError where the list itself is refused (e.g. "Insufficient Permissions").
    """
    used_by_pid: dict[int, int | None] = {}
    listed = list(nvml.nvmlDeviceGetComputeRunningProcesses(device.handle))
    listed += nvml.nvmlDeviceGetGraphicsRunningProcesses(device.handle)
    for info in listed:
        used = info.usedGpuMemory
        previous = used_by_pid.get(info.pid)
        # A process using both compute and graphics is listed twice with the same memory.
        if info.pid not in used_by_pid or (used is not None and (previous or 0) < used):
            used_by_pid[info.pid] = None if used is None else int(used)
    return used_by_pid
