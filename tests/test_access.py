"""Who can reach what (issue 7, "Access"): sharing needs a login, the HTTP API cannot go around
the page's queue, the vLLM server keeps to loopback, and a keyed server answers nobody without
its key on any route but /health, while the page, given the key, ranks as before.

Already proven elsewhere and not repeated: `python -m webui --share` refused in one line
(test_webui_settings.py), POST /gradio_api/run/rerank refused and repeated failed logins slowed
then refused (test_webui_app.py), a non-loopback --host without a key refused (test_server_command.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
import sys
import threading
from typing import Any

import httpx
import psutil
import pytest
from gradio_client import Client
from gradio_client.utils import QueueError

from tests.support.page import launched, queued, wait_until
from tests.support.ranking import assert_same_ranking
from tests.support.server_process import REPO_ROOT, RunningServer, free_port
from tests.support.servers import ACCESS_KEY
from webui.app import create_demo
from webui.settings import Settings, settings_from_args

pytestmark = pytest.mark.timeout(600)

QUERY = "what is the capital of China?"
DOCUMENTS = ["Paris is the capital of France.", "Beijing is the capital of China.", "Pandas eat bamboo."]


def clean_env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("RERANK_")}
    return {**env, "GRADIO_ANALYTICS_ENABLED": "False", **extra}


def run_module(module: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def listening_addresses(port: int) -> set[str]:
    return {
        conn.laddr.ip
        for conn in psutil.net_connections("tcp")
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port
    }


# --- sharing ------------------------------------------------------------------------------------


def test_sharing_by_environment_without_login_is_refused_in_one_line() -> None:
    out = run_module("webui", env=clean_env(RERANK_SHARE="1", RERANK_AUTH=""))
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "Traceback" not in out.stderr
    assert out.stderr.startswith("error: --share publishes the page: give --auth")


def test_sharing_is_forced_only_by_the_explicit_flag_and_then_launches_as_asked() -> None:
    forced = create_demo(settings_from_args(["--share", "--share-without-auth"], {}))
    assert forced.launch_options["share"] is True and forced.launch_options["auth"] is None
    with_login = create_demo(settings_from_args(["--share", "--auth", "ann:pw"], {}))
    assert with_login.launch_options["share"] is True and callable(with_login.launch_options["auth"])
    # Without --share the page stays on loopback, logged in or not.
    plain = create_demo(settings_from_args([], {}))
    assert plain.launch_options["share"] is False and plain.launch_options["server_name"] == "127.0.0.1"


# --- the queue cannot be bypassed -----------------------------------------------------------------


class StallServer:
    """Accepts connections and never answers; counts what connected (every request of the page)."""

    def __init__(self) -> None:
        self.accepted = 0
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._writers: list[asyncio.StreamWriter] = []
        self.port = 0
        threading.Thread(target=self._run, daemon=True).start()
        self._started.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._hold, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._started.set()
        self._loop.run_forever()

    async def _hold(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._writers.append(writer)
        await reader.read()  # until the page hangs up

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        def stop() -> None:
            for writer in self._writers:
                writer.close()
            self._loop.stop()

        self._loop.call_soon_threadsafe(stop)


PARAMETERS = ("query", "instruction", "pasted", "mode_label", "upload", "choice", "top_n")
"""The Rerank endpoint's parameter names, as GET /gradio_api/info lists them."""


def rerank_dependency(url: str) -> int:
    config = httpx.get(f"{url}config", timeout=30).json()
    return int(next(dep["id"] for dep in config["dependencies"] if dep.get("api_name") == "rerank"))


def test_the_http_api_cannot_go_around_a_full_queue() -> None:
    """One Rerank runs (held by a server that never answers) and one waits: the queue is full.
    Every direct route is refused, every queued route says busy, and the server still sees only
    the one request the page let through."""
    stall = StallServer()
    settings = Settings(server_url=stall.url, concurrency=1, queue_size=1, timeout=20.0)
    data = [QUERY, "", "\n".join(DOCUMENTS), "One per line", None, None, 5]
    try:
        with launched(settings) as page:
            url = page.url
            client = Client(url, verbose=False)
            try:
                running = client.submit(*data, api_name="/rerank")
                wait_until(lambda: stall.accepted > 0, "the first job to reach the server", timeout=90)
                waiting = client.submit(*data, api_name="/rerank")
                wait_until(lambda: queued(url) == 1, "the second job to wait in the queue", timeout=90)
                with pytest.raises(QueueError):
                    client.submit(*data, api_name="/rerank").result(timeout=30)

                fn_index = rerank_dependency(url)
                body: dict[str, Any] = {"data": data, "session_hash": "outsider"}
                for path in ("run/rerank", "api/rerank", "run/rerank/", "api/rerank/"):
                    answer = httpx.post(f"{url}gradio_api/{path}", json=body, timeout=30)
                    assert answer.status_code == 404, (path, answer.status_code, answer.text)
                    assert "join the queue" in answer.text
                # Naming the function by index instead of by name changes nothing.
                for path in ("run/predict", "api/predict", "run/anything"):
                    answer = httpx.post(f"{url}gradio_api/{path}", json={**body, "fn_index": fn_index}, timeout=30)
                    assert answer.status_code == 404, (path, answer.status_code, answer.text)
                # The queued routes are the queue: full means busy.
                for path, payload in (
                    ("call/rerank", {"data": data}),
                    ("call/v2/rerank", dict(zip(PARAMETERS, data, strict=True))),
                    ("queue/join", {**body, "fn_index": fn_index, "trigger_id": None}),
                ):
                    answer = httpx.post(f"{url}gradio_api/{path}", json=payload, timeout=30)
                    assert answer.status_code == 503, (path, answer.status_code, answer.text)
                assert stall.accepted == 1, "a request reached the server around the queue"
                running.cancel()
                waiting.cancel()
            finally:
                client.close()
    finally:
        stall.close()


# --- the server keeps to loopback ---------------------------------------------------------------


def test_the_server_listens_on_loopback_unless_told_otherwise_with_a_key(minilm_server: RunningServer) -> None:
    out = run_module("server", "serve", "--profile", "cpu", "--dry-run", env=clean_env())
    assert out.returncode == 0, out.stderr
    assert " --host 127.0.0.1 " in out.stdout
    # The live test server, started with no --host, listens on loopback only.
    assert listening_addresses(minilm_server.port) == {"127.0.0.1"}

    refused = run_module("server", "serve", "--profile", "cpu", "--dry-run", env=clean_env(RERANK_HOST="0.0.0.0"))
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.strip() == (
        "error: refusing to listen on 0.0.0.0 without --api-key: "
        "vLLM's scoring routes would answer anyone who can reach the port"
    )
    keyed_env = clean_env(RERANK_HOST="0.0.0.0", RERANK_API_KEY=ACCESS_KEY)
    keyed = run_module("server", "serve", "--profile", "cpu", "--dry-run", env=keyed_env)
    assert keyed.returncode == 0, keyed.stderr
    assert " --host 0.0.0.0 " in keyed.stdout and "--middleware server.auth.require_api_key" in keyed.stdout
    assert ACCESS_KEY not in keyed.stdout and re.search(r"VLLM_API_KEY='?\*\*\*'? ", keyed.stdout)


def test_the_page_listens_on_loopback_by_default() -> None:
    with launched(Settings(server_url=f"http://127.0.0.1:{free_port()}")) as page:
        url = page.url
        assert listening_addresses(int(httpx.URL(url).port or 0)) == {"127.0.0.1"}


# --- a server with a key ------------------------------------------------------------------------

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
GUARDED: list[tuple[str, str, dict[str, Any] | None]] = [
    ("POST", "/rerank", {"model": MODEL, "query": QUERY, "documents": DOCUMENTS}),
    ("POST", "/v1/rerank", {"model": MODEL, "query": QUERY, "documents": DOCUMENTS}),
    ("POST", "/v2/rerank", {"model": MODEL, "query": QUERY, "documents": DOCUMENTS}),
    ("POST", "/score", {"model": MODEL, "text_1": QUERY, "text_2": DOCUMENTS[1]}),
    ("POST", "/v1/score", {"model": MODEL, "text_1": QUERY, "text_2": DOCUMENTS[1]}),
    ("POST", "/pooling", {"model": MODEL, "input": DOCUMENTS[1]}),
    ("POST", "/v1/embeddings", {"model": MODEL, "input": DOCUMENTS[1]}),
    ("POST", "/tokenize", {"model": MODEL, "prompt": DOCUMENTS[1]}),
    ("POST", "/detokenize", {"model": MODEL, "tokens": [101, 102]}),
    ("GET", "/metrics", None),
    ("GET", "/v1/models", None),
    ("GET", "/version", None),
    ("GET", "/load", None),
    ("GET", "/ping", None),
    ("GET", "/docs", None),
    ("GET", "/openapi.json", None),
]
"""Every route vLLM 0.32 serves for this model (all answer 200 on an unkeyed server)."""


def send(server: RunningServer, method: str, path: str, body: dict[str, Any] | None, auth: str | None) -> int:
    headers = {"Authorization": auth} if auth is not None else {}
    return httpx.request(method, f"{server.url}{path}", json=body, headers=headers, timeout=60).status_code


@pytest.mark.slow
def test_a_keyed_server_answers_no_route_but_health_without_its_key(keyed_server: RunningServer) -> None:
    assert send(keyed_server, "GET", "/health", None, None) == 200
    wrong = {"none": None, "wrong key": "Bearer nope", "other scheme": f"Basic {ACCESS_KEY}", "bare key": ACCESS_KEY}
    for method, path, body in GUARDED:
        for label, auth in wrong.items():
            assert send(keyed_server, method, path, body, auth) == 401, f"{method} {path} with {label}"
        assert send(keyed_server, method, path, body, f"Bearer {ACCESS_KEY}") == 200, f"{method} {path} with the key"
    # The key reaches vLLM through its environment, never a command line `ps` shows.
    launcher = psutil.Process(keyed_server.process.pid)
    for process in [launcher, *launcher.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            assert ACCESS_KEY not in " ".join(process.cmdline()), process.pid


@pytest.mark.slow
def test_the_page_sends_the_key_and_ranks_as_the_server_does(keyed_server: RunningServer) -> None:
    answer = httpx.post(
        f"{keyed_server.url}/v1/rerank",
        json={"model": MODEL, "query": QUERY, "documents": DOCUMENTS},
        headers={"Authorization": f"Bearer {ACCESS_KEY}"},
        timeout=60,
    ).json()
    expected = [(item["index"] + 1, item["relevance_score"]) for item in answer["results"]]
    with launched(Settings(server_url=keyed_server.url, api_key=ACCESS_KEY, timeout=60.0)) as page:
        url = page.url
        table, status, _ = page.client.predict(
            QUERY, "", "\n".join(DOCUMENTS), "One per line", None, None, 0, api_name="/rerank"
        )
        assert status.startswith("Ranked **3** documents"), status
        assert_same_ranking([(row[4], row[1]) for row in table["data"]], expected)
        # The key stays on the page's side: no viewer can read it.
        assert ACCESS_KEY not in httpx.get(f"{url}config", timeout=30).text
        assert ACCESS_KEY not in httpx.get(url, timeout=30).text
    with launched(Settings(server_url=keyed_server.url, timeout=60.0)) as page:
        url = page.url
        _, status, _ = page.client.predict(
            QUERY, "", "\n".join(DOCUMENTS), "One per line", None, None, 0, api_name="/rerank"
        )
        assert status.startswith("⚠️ The server refused the API key (401)"), status
