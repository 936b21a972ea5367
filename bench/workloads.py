"""The issue's three workloads, built once from fixed seeds so every configuration and the
transformers peer see the same pairs.

(a) single: one client, requests of 20 documents: latency p50/p95.
(b) burst: 8 concurrent clients, requests of 20 documents: pairs/s and latency p50/p95.
(c) big: requests of 100 documents of ~500 tokens: pairs/s.

Two more sets, with their own seeds so the prefix cache has never seen them: `agreement`
(requests of 100 documents, one client, so scores come back in job order) gives every
configuration's rankings for bench/rank_agreement.py; `profile_burst` and `profile_big`
are (b) and (c) again for the step profile (bench/step_profile.py).
"""

from __future__ import annotations

import asyncio
import statistics
from dataclasses import dataclass
from typing import Any

from bench.load import LoadResult, run_load
from bench.peer_transformers import CardReranker
from bench.server_metrics import scrape_counters
from bench.texts import RerankJob, make_jobs

GFLOP_PER_TOKEN = 2 * (4_021_784_576 - 151_669 * 2560) / 1e9
"""Qwen3-Reranker-4B's matmul work per token: 2 x its parameters less the embedding
table (a lookup); ~7.27 GFLOP. Attention scores add ~1-2% at these lengths."""

COUNTERS = (
    "vllm:prompt_tokens_total",
    "vllm:prompt_tokens_cached_total",
    "vllm:prefix_cache_queries_total",
    "vllm:prefix_cache_hits_total",
)
"""Prompt tokens and those served from the prefix cache, counted two ways (per request
output, and per KV-cache lookup) because pooling outputs may not carry the first."""


@dataclass(frozen=True)
class WorkloadSpec:
    doc_tokens: int = 200
    """Document length of (a) and (b): ~270 tokens per templated pair."""
    single_docs: int = 20
    single_requests: int = 30
    burst_clients: int = 8
    burst_requests: int = 96
    big_docs: int = 100
    big_doc_tokens: int = 500
    big_clients: int = 2
    """Two requests in flight keep the engine busy between one 100-document request and the next."""
    big_requests: int = 8
    peer_burst_requests: int = 24
    """The transformers peer runs the first requests of (b) only: it is slow."""
    peer_big_requests: int = 2
    agreement_requests: int = 8
    """Queries of 100 documents (~270 tokens per pair) whose rankings are compared."""
    agreement_docs: int = 100
    profile_burst_requests: int = 48
    """Half of (b): ~3 s of engine steps is plenty for a trace and keeps it small."""
    profile_big_requests: int = 4


@dataclass(frozen=True)
class Jobs:
    warmup: list[RerankJob]
    single: list[RerankJob]
    burst: list[RerankJob]
    big: list[RerankJob]
    agreement: list[RerankJob]
    profile_burst: list[RerankJob]
    profile_big: list[RerankJob]


def build_jobs(tokenizer: Any, spec: WorkloadSpec) -> Jobs:
    return Jobs(
        warmup=make_jobs(tokenizer, 4, spec.single_docs, spec.doc_tokens, seed=9)
        + make_jobs(tokenizer, 1, spec.big_docs, spec.big_doc_tokens, seed=8),
        single=make_jobs(tokenizer, spec.single_requests, spec.single_docs, spec.doc_tokens, seed=1),
        burst=make_jobs(tokenizer, spec.burst_requests, spec.single_docs, spec.doc_tokens, seed=2),
        big=make_jobs(tokenizer, spec.big_requests, spec.big_docs, spec.big_doc_tokens, seed=3),
        agreement=make_jobs(tokenizer, spec.agreement_requests, spec.agreement_docs, spec.doc_tokens, seed=6),
        profile_burst=make_jobs(tokenizer, spec.profile_burst_requests, spec.single_docs, spec.doc_tokens, seed=4),
        profile_big=make_jobs(tokenizer, spec.profile_big_requests, spec.big_docs, spec.big_doc_tokens, seed=5),
    )


def cached_fraction(counters: dict[str, float]) -> float:
    """Share of prompt tokens that the prefix cache served, so the engine did not compute."""
    if counters["vllm:prompt_tokens_total"] > 0 and counters["vllm:prompt_tokens_cached_total"] > 0:
        return counters["vllm:prompt_tokens_cached_total"] / counters["vllm:prompt_tokens_total"]
    if counters["vllm:prefix_cache_queries_total"] > 0:
        return counters["vllm:prefix_cache_hits_total"] / counters["vllm:prefix_cache_queries_total"]
    return 0.0


def _throughput(
    prefix: str, result: LoadResult, counters: dict[str, float], gflop: float = GFLOP_PER_TOKEN
) -> dict[str, Any]:
    cached = cached_fraction(counters)
    computed = result.prompt_tokens * (1 - cached)
    return {
        f"{prefix}_pairs_per_s": round(result.pairs_per_s, 1),
        f"{prefix}_p50_ms": round(result.latency_ms(50), 1),
        f"{prefix}_p95_ms": round(result.latency_ms(95), 1),
        f"{prefix}_pairs": result.pairs,
        f"{prefix}_tokens_per_pair": round(result.prompt_tokens / result.pairs, 1),
        f"{prefix}_prefix_cached_pct": round(100 * cached, 1),
        f"{prefix}_tflops": round(computed * gflop / result.wall_s / 1e3, 1),
        f"{prefix}_counters": {k.removeprefix("vllm:"): v for k, v in counters.items()},
    }


def _delta(url: str, before: dict[str, float]) -> dict[str, float]:
    after = scrape_counters(url, COUNTERS)
    return {k: after[k] - before[k] for k in COUNTERS}


def measure_server(
    url: str, model: str, jobs: Jobs, spec: WorkloadSpec, gflop: float = GFLOP_PER_TOKEN
) -> tuple[dict[str, Any], dict[str, list[list[float]]]]:
    """Warm up, then (a), (b), (c), then the agreement set.

    Returns the figures and the scores, per job in document order, of (a) ("single") and
    of the agreement set ("agreement")."""
    asyncio.run(run_load(url, model, jobs.warmup[:2], clients=1))
    asyncio.run(run_load(url, model, jobs.warmup, clients=spec.burst_clients))

    single = asyncio.run(run_load(url, model, jobs.single, clients=1))
    before = scrape_counters(url, COUNTERS)
    burst = asyncio.run(run_load(url, model, jobs.burst, clients=spec.burst_clients))
    burst_counters = _delta(url, before)
    before = scrape_counters(url, COUNTERS)
    big = asyncio.run(run_load(url, model, jobs.big, clients=spec.big_clients))
    big_counters = _delta(url, before)

    figures: dict[str, Any] = {
        "single_p50_ms": round(single.latency_ms(50), 1),
        "single_p95_ms": round(single.latency_ms(95), 1),
        "single_tokens_per_pair": round(single.prompt_tokens / single.pairs, 1),
    }
    figures.update(_throughput("burst", burst, burst_counters, gflop))
    figures.update(_throughput("big", big, big_counters, gflop))
    agreement = asyncio.run(run_load(url, model, jobs.agreement, clients=1))
    # Answers come back in completion order; with one client that is the jobs' order.
    scores = {
        "single": [list(a.scores) for a in single.answers],
        "agreement": [list(a.scores) for a in agreement.answers],
    }
    return figures, scores


def measure_peer(peer: CardReranker, jobs: Jobs, spec: WorkloadSpec) -> tuple[dict[str, Any], list[list[float]]]:
    peer.run(jobs.warmup[:2])
    single = peer.run(jobs.single)
    burst = peer.run(jobs.burst[: spec.peer_burst_requests])
    big = peer.run(jobs.big[: spec.peer_big_requests])
    ms = sorted(t * 1000 for t in single.latencies_s)
    figures = {
        "single_p50_ms": round(statistics.median(ms), 1),
        "single_p95_ms": round(statistics.quantiles(ms, n=100, method="inclusive")[94], 1),
        "burst_pairs_per_s": round(burst.pairs_per_s, 1),
        "burst_pairs": burst.pairs,
        "big_pairs_per_s": round(big.pairs_per_s, 1),
        "big_pairs": big.pairs,
    }
    return figures, [list(s) for s in single.scores]
