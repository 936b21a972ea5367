"""The page's and the server's side of `bench.cpu_overhead`: start both as a user does, call
them every way in alternating rounds, and check that every way did the same work.

    serving = measure_serving(config, documents)   # timings per path, server calls per page request

The paths: through the page with gradio_client (/rerank), through the page with Gradio's HTTP
protocol as the browser speaks it (bench/page_http.py), straight to vLLM's /v1/rerank (httpx),
and the page's bare round trip (an empty query, refused before any server call). vLLM's own
/metrics counts the server calls each page request made.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from bench.machine import load_average, wait_for_quiet
from bench.overhead_config import QUERY, OverheadConfig
from bench.page_http import QueuedCall, fn_index, read_config
from bench.server_metrics import route_counters
from bench.server_process import ChildProcess, ServerProcess, ServerStartError, free_port
from bench.stats import Timings

ROUTES = ("/v1/models", "/tokenize", "/v1/rerank", "/v1/embeddings")
"""The server routes the page calls; their request counts and seconds come from /metrics."""


class BenchError(RuntimeError):
    """A step failed; the message says which and where its log is."""


# --- the server and the page, started as a user starts them ---------------------------------

QUIET_ENV = {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
"""No analytics calls, no hub lookups: nothing but the measured work leaves the host."""


@contextlib.contextmanager
def cpu_server(config: OverheadConfig) -> Iterator[str]:
    port = free_port()
    log_path = config.log_dir / f"cpu-overhead-vllm-{port}.log"
    server = ServerProcess(["--profile", "cpu"], port, log_path, timeout_s=config.startup_timeout_s, env=QUIET_ENV)
    try:
        with server:
            yield server.url
    except ServerStartError as error:
        raise BenchError(f"the cpu profile did not start: {error}") from None


@contextlib.contextmanager
def page(server_url: str, config: OverheadConfig) -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    argv = [sys.executable, "-m", "webui", "--server-url", server_url, "--port", str(port), "--profile-label", "cpu"]
    log_path = config.log_dir / f"cpu-overhead-page-{port}.log"
    child = ChildProcess(argv, url, log_path, health_path="/", explain=_last_line, env=QUIET_ENV, timeout_s=120)
    try:
        with child:
            yield url
    except ServerStartError as error:
        raise BenchError(f"the page did not start: {error}") from None


def _last_line(log_text: str) -> str:
    lines = log_text.strip().splitlines()
    return lines[-1] if lines else "the page exited without a word"


# --- timing the paths ---------------------------------------------------------------------------


def timed(call: Callable[[], Any]) -> tuple[float, Any]:
    started_at = time.perf_counter()
    answer = call()
    return time.perf_counter() - started_at, answer


def time_alternating(
    paths: dict[str, Callable[[list[str]], Any]],
    server_url: str,
    config: OverheadConfig,
    documents_for: Callable[[int], list[str]],
) -> dict[str, Any]:
    """Every path once per round, in order, `repeats` rounds after `warmup` untimed ones: drift in
    the machine's load hits all alike. Every call ranks documents of its own (`documents_for`),
    so the page keeps nothing from an earlier call: for the bundled MiniLM it must count and
    embed every document, as in a first query. vLLM's counters say what the first path asked of it."""
    load_before = wait_for_quiet(config.max_load, config.quiet_wait_s)
    for index in range(config.warmup):
        for number, call in enumerate(paths.values()):
            call(documents_for(-1 - (index * len(paths) + number)))
    timings = {name: Timings() for name in paths}
    calls = {route: [0.0, 0.0] for route in ROUTES}
    first = next(iter(paths))
    for index in range(config.repeats):
        for number, (name, call) in enumerate(paths.items()):
            documents = documents_for(index * len(paths) + number)
            before = route_counters(server_url, ROUTES) if name == first else None
            seconds, _ = timed(functools.partial(call, documents))
            timings[name].samples_s.append(seconds)
            if before is not None:
                after = route_counters(server_url, ROUTES)
                for route in ROUTES:
                    calls[route][0] += after[route][0] - before[route][0]
                    calls[route][1] += after[route][1] - before[route][1]
    return {
        "timings": timings,
        "page_server_calls": {
            route: {"requests": count / config.repeats, "server_s": total_s / config.repeats}
            for route, (count, total_s) in calls.items()
        },
        "load_1min": {"before": load_before, "after": load_average()},
    }


def check_page_result(result: list[Any], answer: dict[str, Any]) -> None:
    """The page showed the server's ranking, every document whole (so both did the same work)."""
    expected = [(item["index"] + 1, round(item["relevance_score"], 4)) for item in answer["results"]]
    table = result[0]["data"]
    shown = [(int(row[4]), float(row[1])) for row in table]
    if shown != expected or any(row[5] != "whole" for row in table):
        raise BenchError(f"the page's ranking differs from the server's: {shown} vs {expected} ({result[1]})")


def measure_serving(
    config: OverheadConfig, documents_for: Callable[[int], list[str]], documents: list[str]
) -> dict[str, Any]:
    """Times the paths (each call on documents of its own), then checks the page against the
    server on `documents`, the set whose scores sentence-transformers is compared with."""
    from gradio_client import Client

    with cpu_server(config) as server_url, httpx.Client(base_url=server_url, timeout=300) as http:
        model = http.get("/v1/models").json()["data"][0]["id"]

        def direct(documents: list[str]) -> dict[str, Any]:
            answer = http.post("/v1/rerank", json={"model": model, "query": QUERY, "documents": documents})
            answer.raise_for_status()
            return dict(answer.json())

        with page(server_url, config) as page_url:
            client = Client(page_url, verbose=False)
            protocol = QueuedCall(page_url, fn_index(read_config(page_url), "rerank"))

            def inputs(documents: list[str]) -> tuple[Any, ...]:
                return ("", "\n".join(documents), "One per line", None, None, config.docs)

            paths: dict[str, Callable[[list[str]], Any]] = {
                "page": lambda docs: client.predict(QUERY, *inputs(docs), api_name="/rerank"),
                "direct": direct,
                "page_protocol": lambda docs: protocol(QUERY, *inputs(docs)),
                # Refused before any server call: what Gradio's queue and event stream cost alone.
                "page_round_trip": lambda docs: protocol("", *inputs(docs)),
            }
            try:
                measured = time_alternating(paths, server_url, config, documents_for)
                # Then each path once on the same documents: the page must show the server's ranking.
                checked = {name: call(documents) for name, call in paths.items()}
            finally:
                client.close()
                protocol.close()

    answer = checked["direct"]
    check_page_result(checked["page"], answer)
    check_page_result(checked["page_protocol"], answer)
    if not str(checked["page_round_trip"][1]).startswith("⚠️"):
        raise BenchError(f"the page did not refuse an empty query: {checked['page_round_trip'][1]}")
    return {
        **measured,
        "model": model,
        "prompt_tokens": answer["usage"]["prompt_tokens"],
        "vllm_scores": [item["relevance_score"] for item in sorted(answer["results"], key=lambda r: r["index"])],
    }
