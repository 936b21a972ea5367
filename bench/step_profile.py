"""Where one engine step's time goes: vLLM's torch profiler around a workload, summarised.

The server is started with `--profiler-config` (vLLM 0.26's form of VLLM_TORCH_PROFILER_DIR),
which adds /start_profile and /stop_profile. `profile_window` wraps one closed-loop workload in
them; the worker writes a Chrome trace, and `summarize_trace` reads its GPU events:

- every kernel, memcpy and memset is put in one class by its name (matmul, attention,
  fp8 quantization, other kernels);
- the window runs from the first GPU event to the last; time in it with nothing on the GPU
  is a host gap: inside a step's GPU range (launch gaps, host syncs) or between steps
  (scheduling, input preparation, output processing, the API server);
- matmul FLOPs are the tokens the steps computed (from vLLM's step annotations, which count
  scheduled tokens, so prefix-cache hits are excluded) times the model's matmul work per
  token, so the rate inside the matmul kernels can be set beside the card's rate at the
  model's own shapes (bench/matmul_rate.py).

    python -m bench.step_profile TRACE.json.gz --tokens N   # summarise a trace here

The profiler itself adds host time per launched operation, so host gaps read high; the
kernel shares are what the GPU ran.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from bench.load import run_load
from bench.server_metrics import scrape_counters
from bench.texts import RerankJob

PROFILER_FLAGS = {
    "profiler": "torch",
    "torch_profiler_with_stack": False,
    "torch_profiler_dump_cuda_time_total": False,
    "ignore_frontend": True,
}
"""Kernels and annotations only: no Python stacks, no summary table, no API-server trace."""

GPU_CATEGORIES = ("kernel", "gpu_memcpy", "gpu_memset")
ATTENTION = re.compile(r"flash|fmha|attn|attention|reshape_and_cache|paged", re.IGNORECASE)
MATMUL = re.compile(r"gemm|nvjet|cutlass|xmma|cublas|wgmma|matmul|splitk", re.IGNORECASE)
QUANT = re.compile(r"quant|fp8|float8|e4m3|abs_clamp|reciprocal", re.IGNORECASE)
"""Inductor names a Triton kernel after the ops it fused: one that computes a dynamic fp8
scale (abs, clamp, reciprocal) is fp8 quantization, fused with the norm or SiLU before it.
No Triton kernel here is a GEMM (vLLM runs its GEMMs in cuBLAS / CUTLASS), although the
quantizing ones carry "cutlass_scaled_mm" in their names; FlashAttention's kernels carry
"cutlass" too, so attention is matched before matmul."""


STEP_ANNOTATION = re.compile(r"^execute_context_(\d+)\((\d+)\)")
"""vLLM's worker annotates each engine step "execute_context_<requests>(<tokens>)_generation_...":
the CPU range and, where kernels ran in it, the matching GPU range."""
COUNTERS = ("vllm:prompt_tokens_total", "vllm:prompt_tokens_cached_total")


def profiler_extra_args(trace_dir: Path) -> str:
    """The vLLM flag that enables the profiler, quoted for --extra-args (shlex)."""
    config = {**PROFILER_FLAGS, "torch_profiler_dir": str(trace_dir)}
    return f"--profiler-config '{json.dumps(config, separators=(',', ':'))}'"


def classify(name: str) -> str:
    if name.startswith("triton_"):
        return "fp8 quantization" if QUANT.search(name) else "other kernels"
    for label, pattern in (("attention", ATTENTION), ("matmul", MATMUL), ("fp8 quantization", QUANT)):
        if pattern.search(name):
            return label
    return "other kernels"


def _union_length(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for start, stop in sorted(intervals):
        if start > end:
            total += stop - start
            end = stop
        elif stop > end:
            total += stop - end
            end = stop
    return total


def _load_events(path: Path) -> list[dict[str, Any]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as handle:
        data = json.load(handle)
    events = data["traceEvents"] if isinstance(data, dict) else data
    return [e for e in events if e.get("ph") == "X" and "dur" in e]


def summarize_trace(path: Path, computed_tokens: float, gflop_per_token: float) -> dict[str, Any]:
    """Shares of the GPU window by kernel class and host gaps, and the matmul kernels' rate.

    `computed_tokens` is used only where the trace has no step annotations to count them."""
    events = _load_events(path)
    gpu = [e for e in events if e.get("cat") in GPU_CATEGORIES]
    if not gpu:
        raise ValueError(f"{path}: no GPU events")
    start = min(float(e["ts"]) for e in gpu)
    window_us = max(float(e["ts"]) + float(e["dur"]) for e in gpu) - start
    by_class: dict[str, float] = {}
    top: dict[str, float] = {}
    for e in gpu:
        label = classify(e["name"]) if e["cat"] == "kernel" else "other kernels"
        by_class[label] = by_class.get(label, 0.0) + float(e["dur"])
        top[e["name"]] = top.get(e["name"], 0.0) + float(e["dur"])
    busy_us = _union_length([(float(e["ts"]), float(e["ts"]) + float(e["dur"])) for e in gpu])
    step_tokens = [
        int(m[2]) for e in events if e.get("cat") == "user_annotation" and (m := STEP_ANNOTATION.match(e["name"]))
    ]
    spans = [
        (float(e["ts"]), float(e["ts"]) + float(e["dur"]))
        for e in events
        if e.get("cat") == "gpu_user_annotation" and STEP_ANNOTATION.match(e["name"])
    ]
    steps = sum(1 for t in step_tokens if t > 0)
    tokens = float(sum(step_tokens)) if step_tokens else computed_tokens
    idle_us = window_us - busy_us
    kernel_us = sum(by_class.values())
    shares = {label: round(100 * us / window_us, 1) for label, us in sorted(by_class.items(), key=lambda x: -x[1])}
    result: dict[str, Any] = {
        "trace": path.name,
        "window_ms": round(window_us / 1000, 1),
        "steps": steps,
        "step_ms": round(window_us / 1000 / steps, 2) if steps else None,
        "computed_tokens": int(tokens),
        "tokens_per_step": round(tokens / steps) if steps else None,
        "share_pct": shares,
        "gpu_idle_pct": round(100 * idle_us / window_us, 1),
        "overlap_pct": round(100 * (kernel_us - busy_us) / window_us, 1),
        "top_kernels_ms": {k: round(v / 1000, 1) for k, v in sorted(top.items(), key=lambda x: -x[1])[:15]},
    }
    if spans:
        # GPU time inside the steps' GPU ranges that no kernel covers: launch gaps, host syncs.
        idle_in_steps_us = _union_length(spans) - _busy_within(gpu, spans)
        result["idle_in_steps_pct"] = round(100 * idle_in_steps_us / window_us, 1)
        result["idle_between_steps_pct"] = round(100 * (idle_us - idle_in_steps_us) / window_us, 1)
    matmul_us = by_class.get("matmul", 0.0)
    if matmul_us and tokens:
        result["matmul_tflops_in_kernels"] = round(tokens * gflop_per_token / (matmul_us / 1e6) / 1e3, 1)
        result["served_tflops_in_window"] = round(tokens * gflop_per_token / (window_us / 1e6) / 1e3, 1)
    return result


def _busy_within(gpu: list[dict[str, Any]], spans: list[tuple[float, float]]) -> float:
    """GPU busy time that falls inside `spans` (sorted, non-overlapping per step)."""
    clipped: list[tuple[float, float]] = []
    spans = sorted(spans)
    for e in gpu:
        s, t = float(e["ts"]), float(e["ts"]) + float(e["dur"])
        for a, b in spans:
            if b <= s:
                continue
            if a >= t:
                break
            clipped.append((max(a, s), min(b, t)))
    return _union_length(clipped)


def _newest_trace(trace_dir: Path, after: float) -> Path | None:
    traces = [p for p in trace_dir.glob("*.json*") if p.stat().st_mtime >= after]
    return max(traces, key=lambda p: p.stat().st_mtime) if traces else None


def profile_window(
    url: str, model: str, jobs: Sequence[RerankJob], clients: int, trace_dir: Path, gflop_per_token: float
) -> dict[str, Any]:
    """Run `jobs` between /start_profile and /stop_profile; summarise the trace the worker wrote."""
    before = scrape_counters(url, COUNTERS)
    started = time.time()
    httpx.post(f"{url}/start_profile", timeout=120).raise_for_status()
    result = asyncio.run(run_load(url, model, jobs, clients=clients))
    httpx.post(f"{url}/stop_profile", timeout=600).raise_for_status()
    after = scrape_counters(url, COUNTERS)
    prompt = after[COUNTERS[0]] - before[COUNTERS[0]]
    cached = after[COUNTERS[1]] - before[COUNTERS[1]]
    trace = None
    deadline = time.monotonic() + 120
    while trace is None and time.monotonic() < deadline:  # the trace is written after stop returns
        trace = _newest_trace(trace_dir, started)
        if trace is None:
            time.sleep(1)
    figures: dict[str, Any] = {"pairs_per_s_while_profiled": round(result.pairs_per_s, 1)}
    if trace is None:
        return {**figures, "error": f"no trace in {trace_dir}"}
    time.sleep(2)  # let the writer finish the file it just created
    try:
        return {**figures, **summarize_trace(trace, prompt - cached, gflop_per_token)}
    except (ValueError, OSError, KeyError) as exc:  # a damaged trace must not lose the measurements
        return {**figures, "error": f"{trace.name}: {exc}"}


def main(argv: Sequence[str] | None = None) -> int:
    from bench.workloads import GFLOP_PER_TOKEN

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("trace", type=Path)
    parser.add_argument("--tokens", type=float, default=0.0, help="tokens the engine computed in the window")
    parser.add_argument("--gflop-per-token", type=float, default=GFLOP_PER_TOKEN)
    args = parser.parse_args(argv)
    print(json.dumps(summarize_trace(args.trace, args.tokens, args.gflop_per_token), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
