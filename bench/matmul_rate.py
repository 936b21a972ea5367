"""The card's measured dense matmul rate, the ceiling the serving figures are compared with.

An 8192^3 product on random data (zeros run faster than real data), timed with CUDA events
after warm-up, median of 20: bf16 through cuBLAS, and fp8 (e4m3, per-tensor scales, bf16
out) through torch._scaled_mm, the path vLLM's online fp8 takes on Hopper.
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
