"""Counters read from a running vLLM server's Prometheus /metrics (parsed by webui.engine).

scrape_counters(url, ["vllm:prompt_tokens_total"])   # {name: sum over label sets}
route_counters(url, ["/v1/rerank"])                   # {route: (requests, seconds)}
"""

from __future__ import annotations

from collections.abc import Sequence

import httpx

from webui.engine import metric_samples

ROUTE_SERIES = ("http_request_duration_seconds_count", "http_request_duration_seconds_sum")
"""prometheus-fastapi-instrumentator's histogram of each route: (requests, seconds)."""


def _metrics_text(url: str) -> str:
    return httpx.get(f"{url}/metrics", timeout=30).text


def scrape_counters(url: str, names: Sequence[str]) -> dict[str, float]:
    """Sum of each named Prometheus counter over its label sets (0 if absent)."""
    totals = dict.fromkeys(names, 0.0)
    for sample in metric_samples(_metrics_text(url), names):
        totals[sample.name] += sample.value
    return totals


def route_counters(url: str, routes: Sequence[str]) -> dict[str, tuple[float, float]]:
    """(requests, seconds) served so far per HTTP route, summed over methods."""
    totals = {(name, route): 0.0 for name in ROUTE_SERIES for route in routes}
    for sample in metric_samples(_metrics_text(url), ROUTE_SERIES):
        route = sample.labels.get("handler", "")
        if route in routes:
            totals[sample.name, route] += sample.value
    count, seconds = ROUTE_SERIES
    return {route: (totals[count, route], totals[seconds, route]) for route in routes}
