"""The memory plan: size vLLM for what the page sends, not for the whole card.

vLLM's defaults give the KV cache whatever `--gpu-memory-utilization` (a fraction of the
*card*) leaves after the weights: ~74 GB of an 80 GB H100 for a 4B reranker whose weights
are 7.5 GiB. A reranker needs far less: every pair is one prefill of at most
`max_model_len` tokens, pairs finish in the step they run, and nothing is decoded. So
the KV cache is sized in absolute bytes for a few engine steps, and the engine limits
follow from the largest pair the page may send.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from server.contract import TEMPLATE_TOKENS, Limits
from server.models import ModelShape
from server.profiles import Profile

GIB = 1 << 30
BLOCK_TOKENS = 16
"""vLLM's KV block size: lengths are rounded up to whole blocks."""


class PlanError(ValueError):
    """The plan does not fit the GPU or the limits are inconsistent."""


@dataclass(frozen=True)
class MemoryPlan:
    max_model_len: int | None
    """None: keep the model's own limit (the bundled MiniLM declares 256)."""
    max_num_batched_tokens: int
    max_num_seqs: int
    kv_cache_bytes: int
    kv_cache_tokens: int
    weights_bytes: int
    activation_bytes: int
    overhead_bytes: int
    device_memory_bytes: int | None
    """Memory of one GPU, when known; sets --gpu-memory-utilization to the plan's share."""
    device: str

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_cache_bytes + self.activation_bytes + self.overhead_bytes

    @property
    def gpu_memory_utilization(self) -> float | None:
        """The plan's share of the card, rounded up with 0.5 GiB to spare.

        With --kv-cache-memory-bytes the fraction no longer sizes anything, but vLLM still
        refuses to start unless free memory >= fraction x card; the default 0.92 would
        refuse on a card that other processes share although the plan fits.
        """
        if self.device_memory_bytes is None:
            return None
        share = (self.total_bytes + GIB // 2) / self.device_memory_bytes
        return min(0.95, math.ceil(share * 100) / 100)

    def lines(self) -> list[str]:
        """The budget, line by line, for `python -m server plan`."""
        where = "per GPU" if self.device == "cuda" else "host RAM"
        rows = [
            ("weights", self.weights_bytes),
            (f"KV cache ({self.kv_cache_tokens} tokens)", self.kv_cache_bytes),
            (f"activations ({self.max_num_batched_tokens} tokens/step)", self.activation_bytes),
            ("CUDA context, graphs, workspace" if self.device == "cuda" else "runtime", self.overhead_bytes),
        ]
        out = [f"{name + ':':<44}{nbytes / GIB:7.2f} GiB" for name, nbytes in rows]
        out.append(f"total: {self.total_bytes / GIB:.2f} GiB ({where})")
        if self.device_memory_bytes:
            out.append(
                f"of the card: {self.device_memory_bytes / GIB:.1f} GiB "
                f"({100 * self.total_bytes / self.device_memory_bytes:.0f}%)"
            )
        return out


def make_plan(
    profile: Profile,
    shape: ModelShape,
    limits: Limits,
    device_memory_gib: float | None = None,
) -> MemoryPlan:
    """Size the engine for `limits` on a card of `device_memory_gib` (None: unknown)."""
    dtype_bytes = 2.0  # bf16 activations and KV in every profile but kv_cache_dtype=fp8
    if profile.qwen3_reranker:
        pair_tokens = TEMPLATE_TOKENS + limits.max_query_tokens + limits.max_doc_tokens
        max_model_len: int | None = _round_up(pair_tokens, BLOCK_TOKENS)
        if max_model_len is not None and max_model_len > shape.max_position_embeddings:
            raise PlanError(
                f"a pair of {max_model_len} tokens exceeds the model's "
                f"{shape.max_position_embeddings}; lower --max-doc-tokens"
            )
        longest = max_model_len or 0
    else:
        # Embedding models score query and document separately: the model's own limit holds.
        max_model_len = None
        longest = shape.max_position_embeddings
    # A step must hold at least one whole pair: pooling requests are never split.
    step_tokens = max(profile.max_num_batched_tokens, longest)
    # Short pairs (a few dozen tokens) should still fill a step, up to vLLM's own default
    # cap of 256 sequences (the value the H100 measurements ran with).
    max_num_seqs = max(1, min(limits.max_docs, 256))

    kv_dtype_bytes = 1.0 if profile.kv_cache_dtype.startswith("fp8") else dtype_bytes
    kv_tokens = _round_up(int(step_tokens * profile.kv_cache_steps), BLOCK_TOKENS)
    kv_bytes = kv_tokens * shape.kv_bytes_per_token(kv_dtype_bytes)
    plan = MemoryPlan(
        max_model_len=max_model_len,
        max_num_batched_tokens=step_tokens,
        max_num_seqs=max_num_seqs,
        kv_cache_bytes=kv_bytes,
        kv_cache_tokens=kv_tokens,
        weights_bytes=_weights_bytes(profile, shape),
        activation_bytes=step_tokens * shape.activation_bytes_per_token(dtype_bytes),
        overhead_bytes=int(profile.overhead_gib * GIB),
        device_memory_bytes=int(device_memory_gib * GIB) if device_memory_gib and profile.device == "cuda" else None,
        device=profile.device,
    )
    if plan.device_memory_bytes and plan.total_bytes > plan.device_memory_bytes:
        raise PlanError(
            f"profile {profile.name} needs {plan.total_bytes / GIB:.1f} GiB per GPU but the GPU "
            f"has {device_memory_gib:.1f} GiB; try a smaller or fp8 profile or lower --max-doc-tokens"
        )
    return plan


def _weights_bytes(profile: Profile, shape: ModelShape) -> int:
    if profile.quantization == "fp8":
        # Online fp8 quantizes the linear layers; the embedding stays in bf16.
        embedding = shape.vocab_size * shape.hidden_size
        return int(embedding * 2 + (shape.num_params - embedding) * 1)
    return shape.num_params * 2


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple
