"""Merge the benchmark's records and render them as the committed markdown table.

Ratios are against the `vllm-defaults` record; the "% of matmul" columns compare the
achieved matmul work (tokens actually computed, i.e. less those served from the prefix
cache, x 7.27 GFLOP) with the card's measured dense bf16 rate.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

GIB_MIB = 1024

TARGETS = {
    # config: (peak GiB, min throughput ratio on (b) and (c), max single p50 ratio)
    "qwen3-4b": (11.0, 1.0, 1.1),
    "qwen3-4b-fp8": (8.0, 1.2, None),
}
PEER_MIN_RATIO = 3.0
"""Both profiles: at least 3x the transformers peer on (b)."""


def merge_records(dirs: Sequence[Path]) -> list[dict[str, Any]]:
    """Every record of every *.json list in `dirs`; a later record of a config replaces an earlier one."""
    by_config: dict[str, dict[str, Any]] = {}
    for directory in dirs:
        for path in sorted(directory.glob("*.json"), key=lambda p: p.stat().st_mtime):
            data = json.loads(path.read_text())
            if not isinstance(data, list) or not all(isinstance(r, dict) and "config" in r for r in data):
                continue
            for record in data:
                by_config[record["config"]] = record
    # The machine's matmul rates travel with every record, so each one stands alone.
    machine = by_config.pop("machine", {})
    for record in by_config.values():
        if "matmul_tflops" in machine:
            record.setdefault("matmul_tflops", machine["matmul_tflops"])
    # The baselines and the profiles first, tuning candidates next, the transformers peer last.
    order = {"vllm-defaults": 1, "common-advice": 2, "qwen3-4b": 3, "qwen3-4b-fp8": 4, "transformers": 99}
    return sorted(by_config.values(), key=lambda r: order.get(r["config"], 50))


def _fmt(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, float | int):
        return f"{value:,.{digits}f}"
    return str(value)


def _ratio(value: float | None, base: float | None) -> str:
    if value is None or not base:
        return "-"
    return f"{value / base:.2f}x"


def _gib(mib: int | None) -> str:
    return "-" if mib is None else f"{mib / GIB_MIB:.1f}"


def _check(ok: bool) -> str:
    return "met" if ok else "**missed**"


def _target_line(r: dict[str, Any], base: dict[str, Any], peer: dict[str, Any] | None) -> str:
    peak_gib, min_ratio, max_p50 = TARGETS[r["profile"]]
    parts = [f"peak {_gib(r['peak_mib'])} GiB <= {peak_gib:g}: {_check(r['peak_mib'] <= peak_gib * GIB_MIB)}"]
    for w, label in (("burst", "(b)"), ("big", "(c)")):
        ratio = r[f"{w}_pairs_per_s"] / base[f"{w}_pairs_per_s"]
        parts.append(f"{label} {ratio:.2f}x >= {min_ratio:g}x: {_check(ratio >= min_ratio)}")
    if max_p50 is not None:
        ratio = r["single_p50_ms"] / base["single_p50_ms"]
        parts.append(f"(a) p50 {ratio:.2f}x <= {max_p50:g}x: {_check(ratio <= max_p50)}")
    if peer is not None:
        ratio = r["burst_pairs_per_s"] / peer["burst_pairs_per_s"]
        parts.append(f"(b) vs transformers {ratio:.2f}x >= {PEER_MIN_RATIO:g}x: {_check(ratio >= PEER_MIN_RATIO)}")
    return f"- `{r['config']}`: " + "; ".join(parts)


def target_lines(records: list[dict[str, Any]]) -> list[str]:
    """Every memory-planned configuration of a profile with targets, checked against them."""
    by_name = {r["config"]: r for r in records}
    base, peer = by_name.get("vllm-defaults"), by_name.get("transformers")
    if base is None or base.get("error"):
        return ["- not evaluated: vLLM's defaults were not measured"]
    return [
        _target_line(r, base, peer)
        for r in records
        if r.get("profile") in TARGETS and r.get("memory_plan") and not r.get("error")
    ]


def _facts(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Machine and versions: the first value any record has for each."""
    keys = ("gpu", "gpu_total_mib", "driver", "cuda_driver", "python", "torch", "vllm", "transformers", "weights")
    return {k: next((r[k] for r in records if r.get(k) is not None), None) for k in keys}


def _matmul_share(r: dict[str, Any], rates: dict[str, float]) -> str:
    if not rates.get("bf16") or r.get("burst_tflops") is None:
        return "-"
    text = f"{100 * r['burst_tflops'] / rates['bf16']:.0f}% / {100 * r['big_tflops'] / rates['bf16']:.0f}%"
    if rates.get("fp8") and r.get("profile", "").endswith("fp8"):
        text += f" (fp8: {100 * r['burst_tflops'] / rates['fp8']:.0f}% / {100 * r['big_tflops'] / rates['fp8']:.0f}%)"
    return text


def render_markdown(records: list[dict[str, Any]], notes: str = "") -> str:
    by_name = {r["config"]: r for r in records}
    rates: dict[str, float] = next((r["matmul_tflops"] for r in records if r.get("matmul_tflops")), {})
    base = by_name.get("vllm-defaults", {})
    facts = _facts(records)
    out = [
        "# GPU benchmark: Qwen3-Reranker-4B on one H100",
        "",
        "Generated by `python -m bench.run_gpu_bench report` from `gpu-h100.json`; how to rerun: `bench/README.md`.",
        "",
        f"- Machine: {facts['gpu']} ({_fmt(facts['gpu_total_mib'])} MiB), driver {facts['driver']} "
        f"(CUDA {facts['cuda_driver']}); Python {facts['python']}, torch {facts['torch']}, "
        f"vLLM {facts['vllm']}, transformers {facts['transformers']}.",
        f"- Measured dense matmul rate (8192^3, random data): bf16 {_fmt(rates.get('bf16'))} TFLOP/s, "
        f"fp8 {_fmt(rates.get('fp8'))} TFLOP/s.",
        f"- Weights: {facts['weights']}.",
        "- Workloads, the same pairs for every row: (a) one client, requests of 20 documents of ~200 "
        "tokens (~290 tokens per templated pair); (b) 8 concurrent clients, the same request shape; "
        "(c) 2 concurrent clients, requests of 100 documents of ~500 tokens (~590 per pair).",
        "- Peak: NVML device memory above idle, the higher of startup and load. Ratios: against "
        "vLLM's defaults in the same session. % of matmul: served work (7.27 GFLOP per token the "
        "engine computed, prefix-cache hits excluded) over the measured bf16 rate. Max score diff: "
        "largest |score - transformers peer's score| over (a)'s 600 pairs, same weights.",
        "",
        "| config | peak GiB (startup / load) | startup s | (a) p50 / p95 ms | (b) pairs/s | (b) p50 / p95 ms "
        "| (c) pairs/s | (b) vs defaults | (c) vs defaults | (b) / (c) % of matmul | max score diff |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        if r.get("error"):
            out.append(f"| {r['config']} | failed: {r['error'].splitlines()[0][:120]} ||||||||||")
            continue
        out.append(
            f"| {r['config']} | {_gib(r.get('peak_mib'))} ({_gib(r.get('startup_peak_mib'))} / "
            f"{_gib(r.get('load_peak_mib'))}) | {_fmt(r.get('startup_s'))} | {_fmt(r.get('single_p50_ms'))} / "
            f"{_fmt(r.get('single_p95_ms'))} | {_fmt(r.get('burst_pairs_per_s'))} | {_fmt(r.get('burst_p50_ms'))} / "
            f"{_fmt(r.get('burst_p95_ms'))} | {_fmt(r.get('big_pairs_per_s'))} | "
            f"{_ratio(r.get('burst_pairs_per_s'), base.get('burst_pairs_per_s'))} | "
            f"{_ratio(r.get('big_pairs_per_s'), base.get('big_pairs_per_s'))} | {_matmul_share(r, rates)} | "
            f"{_fmt(r.get('score_max_abs_diff'), 3)} |"
        )
    out += ["", "## Targets", "", *target_lines(records), "", "## Flags (the vLLM command each row ran)", ""]
    # Every command starts with the defaults' (model, Qwen3 loading flags, template); show the rest.
    common = base.get("vllm_command", "")
    if common:
        out.append(f"- `vllm-defaults`: `{common.split(' -m ', 1)[-1]}`")
    for r in records:
        command = r.get("vllm_command")
        if command and r["config"] != "vllm-defaults":
            rest = command[len(common) :].strip() if common and command.startswith(common) else command
            out.append(f"- `{r['config']}`: defaults + `{rest}`")
    out.append("")
    out.append("Where a flag appears twice, the later one (an `--extra-args` value) is the one vLLM uses.")
    checks = [r for r in records if r.get("page_check")]
    if checks:
        out += ["", "## The page's GPU panel on the host", ""]
        for r in checks:
            c = r["page_check"]
            smi = c.get("nvidia_smi", {})
            out.append(
                f"- While `{r['config']}` was served, read by {c.get('read_by')}: panel "
                f"`{' / '.join(c.get('panel', []))}`; nvidia-smi {smi.get('used_mib')} / {smi.get('total_mib')} MiB, "
                f"processes {smi.get('processes_mib')}. Used differs by {c.get('used_diff_pct')}%, total by "
                f"{c.get('total_diff_pct')}%; vLLM pids on the GPU: {c.get('vllm_pids_on_gpu')}; "
                f"{'passed' if c.get('ok') else 'FAILED'}."
            )
    if notes:
        out += ["", notes.strip()]
    return "\n".join(out) + "\n"
