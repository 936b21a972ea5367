"""The card's measured dense matmul rate, the ceiling the serving figures are compared with.

An 8192^3 product on random data (zeros run faster than real data), timed with CUDA events
after warm-up, median of 20: bf16 through cuBLAS, and fp8 (e4m3, per-tensor scales, bf16
out) through torch._scaled_mm.

`shape_tflops` measures the rate the model's own linear layers can reach: one layer's four
products (qkv, o, gate-up, down) at a step's token count, weights rotated over several
copies so that the 60 MB L2 does not hold them (vLLM reads 36 layers' weights in turn).
fp8 there uses per-token activation and per-channel weight scales (rowwise _scaled_mm), the
scale shapes of vLLM's online fp8 on Hopper (per-token activations through CUTLASS).
"""

from __future__ import annotations

import statistics
from typing import Any

SIZE = 8192


def _median_ms(torch: Any, fn: Any, repeats: int = 20) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return float(statistics.median(times))


QWEN3_4B_LINEARS = {"qkv": (2560, 6144), "o": (4096, 2560), "gate_up": (2560, 19456), "down": (9728, 2560)}
"""(in, out) features of Qwen3-Reranker-4B's linear layers (32 query and 8 KV heads of 128)."""
WEIGHT_COPIES = 4
"""4 x 4B's 194 MB of bf16 layer weights: several times the L2."""


def shape_tflops(
    linears: dict[str, tuple[int, int]] = QWEN3_4B_LINEARS, tokens: tuple[int, ...] = (2048, 6144, 8192)
) -> dict[str, dict[str, dict[str, float]]]:
    """{"bf16" | "fp8": {str(tokens): {layer name: TFLOP/s, "layer": whole layer's TFLOP/s}}}."""
    import torch

    out: dict[str, dict[str, dict[str, float]]] = {"bf16": {}, "fp8": {}}
    for dtype in ("bf16", "fp8"):
        weights = {
            name: [torch.randn(k, n, device="cuda", dtype=torch.bfloat16) / k**0.5 for _ in range(WEIGHT_COPIES)]
            for name, (k, n) in linears.items()
        }
        for m in tokens:
            inputs = {name: torch.randn(m, k, device="cuda", dtype=torch.bfloat16) for name, (k, _) in linears.items()}
            fns = {name: _product(torch, dtype, inputs[name], weights[name]) for name in linears}
            rates, total_ms, total_flop = {}, 0.0, 0.0
            for name, (k, n) in linears.items():
                ms = _median_ms(torch, fns[name], repeats=40)
                rates[name] = round(2 * m * k * n / ms / 1e9, 1)
                total_ms += ms
                total_flop += 2 * m * k * n
            rates["layer"] = round(total_flop / total_ms / 1e9, 1)
            out[dtype][str(m)] = rates
        del weights
    return out


def _product(torch: Any, dtype: str, a: Any, weights: list[Any]) -> Any:
    """A callable doing one product per call, with the next weight copy each time."""
    turn = [0]
    if dtype == "bf16":

        def bf16() -> Any:
            turn[0] = (turn[0] + 1) % len(weights)
            return a @ weights[turn[0]]

        return bf16
    a8 = a.to(torch.float8_e4m3fn)
    w8 = [w.t().contiguous().to(torch.float8_e4m3fn).t() for w in weights]  # column-major
    scale_a = torch.ones((a.shape[0], 1), device="cuda", dtype=torch.float32)
    scale_b = torch.ones((1, weights[0].shape[1]), device="cuda", dtype=torch.float32)

    def fp8() -> Any:
        turn[0] = (turn[0] + 1) % len(w8)
        return torch._scaled_mm(a8, w8[turn[0]], scale_a=scale_a, scale_b=scale_b, out_dtype=torch.bfloat16)

    return fp8


def matmul_tflops() -> dict[str, float]:
    """{"bf16": TFLOP/s, "fp8": TFLOP/s (absent where fp8 matmul is unsupported)}."""
    import torch

    flop = 2 * SIZE**3
    a = torch.randn(SIZE, SIZE, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(SIZE, SIZE, device="cuda", dtype=torch.bfloat16)
    rates = {"bf16": flop / _median_ms(torch, lambda: a @ b) / 1e9}
    try:
        a8 = a.to(torch.float8_e4m3fn)
        b8 = b.t().contiguous().to(torch.float8_e4m3fn).t()  # column-major, as cuBLASLt wants
        one = torch.ones((), device="cuda", dtype=torch.float32)
        ms = _median_ms(torch, lambda: torch._scaled_mm(a8, b8, scale_a=one, scale_b=one, out_dtype=torch.bfloat16))
        rates["fp8"] = flop / ms / 1e9
    except (RuntimeError, AttributeError):
        pass
    return rates
