"""What GPUs this host has, through NVML (server/nvml.py)."""

from __future__ import annotations

from dataclasses import dataclass

from server.nvml import NvmlUnavailable, nvml_session, open_devices, read_memory


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    memory_bytes: int


def detect_gpus() -> list[Gpu]:
    """NVIDIA GPUs visible to this process; empty without a driver, a GPU or nvidia-ml-py."""
    try:
        with nvml_session() as nvml:
            return [Gpu(d.index, d.name, read_memory(nvml, d)[1]) for d in open_devices(nvml)]
    except NvmlUnavailable:
        return []
