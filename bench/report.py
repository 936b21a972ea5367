"""Merge the benchmark's records and render them as the committed markdown table.

Ratios are against the `vllm-defaults` record; the "% of matmul" columns compare the
achieved matmul work (tokens actually computed, i.e. less those served from the prefix
cache, x the model's GFLOP per token: 7.27 for the 4B) with the card's measured dense bf16 rate.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

GIB_MIB = 1024

TARGETS = {
    # config: (peak GiB, min throughput ratio on (b) and (c), max single p50 ratio); issue 12
    "qwen3-4b": (11.0, 1.15, 1.1),
    "qwen3-4b-fp8": (9.0, 1.6, None),
}
PEER_MIN_RATIO = 3.0
"""Both profiles: at least 3x the transformers peer on (b)."""


AGREEMENT_REFERENCE = "qwen3-4b"
"""Rankings are compared with the bf16 profile served by the same engine."""


def add_rank_agreement(records: list[dict[str, Any]], dirs: Sequence[Path]) -> None:
    """Each record gets `rank_agreement` against the bf16 profile's scores (bench/rank_agreement.py)."""
    from bench.rank_agreement import compare_files

    files: dict[str, Path] = {}
    for directory in dirs:  # a later directory's file of a config replaces an earlier one
        for path in directory.glob("scores-*.json"):
            files[path.stem.removeprefix("scores-")] = path
    reference = files.get(AGREEMENT_REFERENCE)
    if reference is None:
        return
    for record in records:
        name = record["config"]
        if name in files and name != AGREEMENT_REFERENCE:
            record["rank_agreement"] = {"reference": AGREEMENT_REFERENCE, **compare_files(reference, files[name])}


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
        for key in ("matmul_tflops", "matmul_shapes_tflops"):
            if key in machine:
                record.setdefault(key, machine[key])
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


def _span(values: list[int]) -> str:
    return str(values[0]) if len(values) == 1 else f"{values[0]}-{values[-1]}"


def _gflop(records: list[dict[str, Any]]) -> str:
    found = next((r["gflop_per_token"] for r in records if r.get("gflop_per_token")), None)
    return "7.27" if found is None else f"{found:.2f}"


def _matmul_share(r: dict[str, Any], rates: dict[str, float]) -> str:
    if not rates.get("bf16") or r.get("burst_tflops") is None:
        return "-"
    text = f"{100 * r['burst_tflops'] / rates['bf16']:.0f}% / {100 * r['big_tflops'] / rates['bf16']:.0f}%"
    if rates.get("fp8") and r.get("profile", "").endswith("fp8"):
        text += f" (fp8: {100 * r['burst_tflops'] / rates['fp8']:.0f}% / {100 * r['big_tflops'] / rates['fp8']:.0f}%)"
    return text


def _shape_lines(records: list[dict[str, Any]]) -> list[str]:
    shapes = next((r["matmul_shapes_tflops"] for r in records if r.get("matmul_shapes_tflops")), None)
    if not shapes:
        return []
    out = [
        "",
        "## Matmul rate at the model's own shapes",
        "",
        "TFLOP/s of one layer's products at a step's token count (M), random data, weights rotated "
        "over 4 copies (`bench/matmul_rate.py`); `layer` is the four together, the ceiling a step's "
        "matmuls can reach.",
        "",
        "| dtype | M tokens | qkv 2560x6144 | o 4096x2560 | gate-up 2560x19456 | down 9728x2560 | layer |",
        "|---|---|---|---|---|---|---|",
    ]
    for dtype, by_m in shapes.items():
        for m, r in by_m.items():
            out.append(
                f"| {dtype} | {m} | {_fmt(r.get('qkv'))} | {_fmt(r.get('o'))} | {_fmt(r.get('gate_up'))} "
                f"| {_fmt(r.get('down'))} | {_fmt(r.get('layer'))} |"
            )
    return out


def _layer_rate(records: list[dict[str, Any]], dtype: str, tokens: float | None) -> float | None:
    """The measured whole-layer rate at the token count nearest a step's."""
    shapes: dict[str, Any] = next((r["matmul_shapes_tflops"] for r in records if r.get("matmul_shapes_tflops")), {})
    by_m = shapes.get(dtype, {})
    if not by_m or not tokens:
        return None
    nearest = min(by_m, key=lambda m: abs(int(m) - tokens))
    return float(by_m[nearest]["layer"])


def _profile_lines(records: list[dict[str, Any]]) -> list[str]:
    rows = [(r, w, p) for r in records for w, p in (r.get("step_profile") or {}).items()]
    if not rows:
        return []
    out = [
        "",
        "## Where a step's time goes (torch profiler through vLLM's `--profiler-config`)",
        "",
        "Shares of the profiled window (first to last GPU event) by kernel class; idle = nothing on the "
        "GPU, inside a step's GPU range (launch gaps, host syncs) or between steps (scheduling, input preparation, "
        "output processing, HTTP). Matmul TFLOP/s = computed tokens x 7.27 GFLOP over the matmul kernels' time; "
        "attainable = the same layer's products measured alone at the nearest M (table above).",
        "",
        "| config | workload | steps | ms/step | tokens/step | matmul % | attention % | fp8 quant % | other kernels % "
        "| idle in steps % | idle between steps % | matmul TFLOP/s (of attainable) | served TFLOP/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r, workload, p in rows:
        if p.get("error"):
            out.append(f"| {r['config']} | {workload} | failed: {p['error'][:100]} |||||||||||")
            continue
        share = p.get("share_pct", {})
        dtype = "fp8" if r.get("profile", "").endswith("fp8") else "bf16"
        attainable = _layer_rate(records, dtype, p.get("tokens_per_step"))
        rate = p.get("matmul_tflops_in_kernels")
        of = f" ({100 * rate / attainable:.0f}% of {attainable:.0f})" if rate and attainable else ""
        out.append(
            f"| {r['config']} | {workload} | {p.get('steps')} | {_fmt(p.get('step_ms'), 1)} | "
            f"{_fmt(p.get('tokens_per_step'))} | {_fmt(share.get('matmul'), 1)} | {_fmt(share.get('attention'), 1)} | "
            f"{_fmt(share.get('fp8 quantization'), 1)} | {_fmt(share.get('other kernels'), 1)} | "
            f"{_fmt(p.get('idle_in_steps_pct'), 1)} | {_fmt(p.get('idle_between_steps_pct'), 1)} | "
            f"{_fmt(rate)}{of} | {_fmt(p.get('served_tflops_in_window'))} |"
        )
    return out


def _agreement_lines(records: list[dict[str, Any]]) -> list[str]:
    rows = [(r, name, a) for r in records for name, a in (r.get("rank_agreement") or {}).items() if name != "reference"]
    if not rows:
        return []
    out = [
        "",
        f"## Rank agreement with `{AGREEMENT_REFERENCE}` (bf16) on the same weights",
        "",
        "Per query: Spearman's rho and the share of the reference's 10 best documents also in the "
        "other's 10 best (`bench/rank_agreement.py`). `single`: (a)'s 30 queries of 20 documents; "
        "`agreement`: 8 fresh queries of 100 documents; spread = median per-query standard deviation "
        "of the reference's scores. A random model has no notion of relevance, so rounding moves its "
        "scores in arbitrary directions, where a trained reranker keeps relevant and irrelevant "
        "documents far apart: on random weights these figures overstate the error.",
        "",
        "| config | set | queries x docs | Spearman mean / min | top-10 overlap mean / min | max abs diff | spread |",
        "|---|---|---|---|---|---|---|",
    ]
    for r, name, a in rows:
        out.append(
            f"| {r['config']} | {name} | {a['queries']} x {a['docs_per_query']} | {a['spearman_mean']:.3f} / "
            f"{a['spearman_min']:.3f} | {a['top10_overlap_mean']:.2f} / {a['top10_overlap_min']:.2f} | "
            f"{a['max_abs_diff']:.3f} | {a['reference_score_spread']:.3f} |"
        )
    return out


def render_markdown(records: list[dict[str, Any]], notes: str = "", source: str = "gpu-h100.json") -> str:
    by_name = {r["config"]: r for r in records}
    rates: dict[str, float] = next((r["matmul_tflops"] for r in records if r.get("matmul_tflops")), {})
    base = by_name.get("vllm-defaults", {})
    facts = _facts(records)
    out = [
        f"# GPU benchmark: Qwen3-Reranker models on one {facts['gpu'] or 'GPU'}",
        "",
        f"Generated by `python -m bench.run_gpu_bench report` from `{source}`; how to rerun: `bench/README.md`.",
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
        f"vLLM's defaults in the same session. % of matmul: served work ({_gflop(records)} GFLOP per token the "
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
        # Servers started side by side (serve --together): own processes' memory, crowded starts.
        together = (r.get("started_with") or 1) > 1
        mark = "†" if together else ""
        out.append(
            f"| {r['config']} | {_gib(r.get('peak_mib'))}{mark} ({_gib(r.get('startup_peak_mib'))} / "
            f"{_gib(r.get('load_peak_mib'))}) | {_fmt(r.get('startup_s'))}{mark} | {_fmt(r.get('single_p50_ms'))} / "
            f"{_fmt(r.get('single_p95_ms'))} | {_fmt(r.get('burst_pairs_per_s'))} | {_fmt(r.get('burst_p50_ms'))} / "
            f"{_fmt(r.get('burst_p95_ms'))} | {_fmt(r.get('big_pairs_per_s'))} | "
            f"{_ratio(r.get('burst_pairs_per_s'), base.get('burst_pairs_per_s'))} | "
            f"{_ratio(r.get('big_pairs_per_s'), base.get('big_pairs_per_s'))} | {_matmul_share(r, rates)} | "
            f"{_fmt(r.get('score_max_abs_diff'), 3)} |"
        )
    crowded = [r for r in records if (r.get("started_with") or 1) > 1]
    if crowded:
        out += [
            "",
            f"† Started together with {_span(sorted({r['started_with'] - 1 for r in crowded}))} other "
            "configurations (`serve --together`) "
            "and measured one at a time while the others sat idle: peak memory is the sum of NVML's per-process "
            "readings over that server's processes, and the startup seconds are those of a crowded start.",
        ]
    out += ["", "## Targets", "", *target_lines(records)]
    out += _shape_lines(records) + _profile_lines(records) + _agreement_lines(records)
    out += ["", "## Flags (the vLLM command each row ran)", ""]
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
