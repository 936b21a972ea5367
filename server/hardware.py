"""What GPUs this host has, through NVML (nvidia-ml-py)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    memory_bytes: int


def detect_gpus() -> list[Gpu]:
    """NVIDIA GPUs visible to this process; empty without a driver or a GPU."""
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return []
    try:
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(handle)
            gpus.append(
                Gpu(
                    i,
                    name if isinstance(name, str) else name.decode(),
                    int(pynvml.nvmlDeviceGetMemoryInfo(handle).total),
                )
            )
        return gpus
    finally:
        pynvml.nvmlShutdown()
