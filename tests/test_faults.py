"""Faults (issue 7): a server that stalls, and a server killed in the middle of requests.

The stalled server is a socket in this process that accepts connections and never answers; it
can be switched to relay to the real MiniLM server, so the request after the timeouts is seen
to run to a correct result. The killed server is the one ./launch.sh supervises: its users get
one clear line within the timeout, the page keeps answering and shows the server as down,
launch.sh restarts it on the same port with a growing pause and says so, and the page recovers
by itself. That launcher runs as a service would, stdin closed, and ends with SIGTERM to it
alone (`kill PID`, docker stop, systemd), which must stop everything, the restarted vLLM
included. (A dead server from the start and a slow server's single timeout are in
test_webui_app.py; Ctrl-C and SIGKILL of launch.sh are in test_launch.py.)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from gradio_client import Client
from gradio_client.utils import Status
from prometheus_client.parser import text_string_to_metric_families

from tests.support.page import LaunchedPage, wait_until
from tests.support.page import launched as launch_page
from tests.support.ranking import assert_same_ranking
from tests.support.server_process import REPO_ROOT, RunningServer, free_port
from webui.settings import Settings

pytestmark = pytest.mark.timeout(1200)

QUERY = "what is the capital of China?"
CAPITALS = ["Paris is the capital of France.", "Beijing is the capital of China.", "Tokyo is the capital of Japan."]
LINES = "One per line"
MODEL = "sentence-transformers/all-MiniLM-L6-v2"
STOP_DEADLINE_S = 10
"""The launcher's bound for stopping everything on SIGTERM (as in test_launch.py)."""


# --- helpers ------------------------------------------------------------------------------------


def launched(settings: Settings) -> contextlib.AbstractContextManager[LaunchedPage]:
    return launch_page(settings, LaunchedPage)


def rerank(client: Client, pasted: str, top_n: int = 0) -> Any:
    return client.predict(QUERY, "", pasted, LINES, None, None, top_n, api_name="/rerank")


def submit(client: Client, pasted: str, top_n: int = 0) -> Any:
    return client.submit(QUERY, "", pasted, LINES, None, None, top_n, api_name="/rerank")


def server_table(server_url: str, documents: list[str]) -> list[tuple[int, float]]:
    """(1-based position, score) best first, from the server's own /v1/rerank."""
    answer = httpx.post(
        f"{server_url}/v1/rerank", json={"model": MODEL, "query": QUERY, "documents": documents}, timeout=120
    )
    answer.raise_for_status()
    return [(item["index"] + 1, item["relevance_score"]) for item in answer.json()["results"]]


def page_table(result: Any) -> list[tuple[int, float]]:
    return [(row[4], row[1]) for row in result[0]["data"]]


def assert_one_line_error(result: Any, *phrases: str) -> None:
    table, status, download = result
    assert status.startswith("⚠️ ") and "\n" not in status, status
    assert any(phrase in status for phrase in phrases), status
    assert table["data"] == [] and download["visible"] is False


def banner(page_url: str) -> str:
    """The server banner as an open tab gets it: its load event, sent as the browser sends it."""
    config = httpx.get(f"{page_url}config", timeout=30).json()
    banner_id = next(c["id"] for c in config["components"] if c.get("props", {}).get("elem_id") == "server-banner")
    fn_index = next(dep["id"] for dep in config["dependencies"] if dep["outputs"] == [banner_id])
    answer = httpx.post(
        f"{page_url}gradio_api/run/predict",
        json={"data": [], "fn_index": fn_index, "session_hash": "fault-viewer"},
        timeout=30,
    )
    answer.raise_for_status()
    return str(answer.json()["data"][0]["value"])


# --- a stalled server ----------------------------------------------------------------------------


class StallingRelay:
    """Accepts connections and never answers them; once `relay` is set, new connections are
    piped to the upstream server instead. Counts the connections it holds open."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.relay = False
        self.accepted = 0
        self.holding = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self.port = 0
        threading.Thread(target=self._run, daemon=True).start()
        self._ready.wait(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.relay:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
            return
        self.holding += 1
        try:
            while await reader.read(65536):  # read the request, answer nothing, until the page hangs up
                pass
        finally:
            self.holding -= 1
            writer.close()

    @staticmethod
    async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        except ConnectionError:
            pass
        finally:
            sink.close()

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)


def test_a_stalled_server_times_out_cleanly_and_frees_the_slot(minilm_server: RunningServer) -> None:
    relay = StallingRelay(minilm_server.port)
    timeout = 3.0
    settings = Settings(server_url=relay.url, concurrency=1, queue_size=4, timeout=timeout)
    try:
        with launched(settings) as page:
            started = time.monotonic()
            first, second = submit(page.client, "\n".join(CAPITALS)), submit(page.client, "\n".join(CAPITALS))
            first_result = first.result(timeout=60)
            first_s = time.monotonic() - started
            second_result = second.result(timeout=60)
            second_s = time.monotonic() - started
            for result in (first_result, second_result):
                assert_one_line_error(result, f"did not answer within {timeout:g} s")
            # One slot: the first job held it for one timeout, then let the second have it.
            assert timeout * 0.9 <= first_s < timeout + 10
            assert 2 * timeout * 0.9 <= second_s < 2 * timeout + 15
            # The page hung up on every stalled connection: none is left holding a pool place.
            wait_until(lambda: relay.holding == 0, "the page to close its stalled connections", 10, 0.2)
            assert relay.accepted >= 2

            relay.relay = True
            following = rerank(page.client, "\n".join(CAPITALS))
            assert_same_ranking(page_table(following), server_table(minilm_server.url, CAPITALS))
    finally:
        relay.close()


# --- a server killed mid-request, restarted by launch.sh ------------------------------------------


def launch_env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("RERANK_")}
    # The tests' own virtualenv, so that launch.sh finds it installed and starts at once.
    return {**env, "RERANK_VENV": sys.prefix, "GRADIO_ANALYTICS_ENABLED": "False", **extra}


def listener(port: int) -> int | None:
    """The pid listening on a loopback port."""
    for conn in psutil.net_connections("tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
            return int(conn.pid)
    return None


def prompt_tokens_scored(server_url: str) -> float:
    """vLLM's own count of the prompt tokens it has scored so far (a counter in /metrics).

    Not its running/waiting gauges: a pooling request ends in the step that runs it, so they
    read 0 most of the time however busy the engine is (bench/results/metrics-lag-*.md)."""
    text = httpx.get(f"{server_url}/metrics", timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "vllm:prompt_tokens_total"
    )


def vllm_processes(root: int) -> list[psutil.Process]:
    """vLLM API servers below `root` (launch.sh -> python -m server serve -> vLLM)."""
    found = []
    for process in psutil.Process(root).children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            if "vllm.entrypoints.openai.api_server" in " ".join(process.cmdline()):
                found.append(process)
    return found


def long_documents(count: int, tag: str = "") -> list[str]:
    """`count` documents of about 30 words; `tag` makes a set of them new to the page (it keeps
    the MiniLM's vectors of documents it has seen)."""
    words = ["river", "stone", "market", "window", "garden", "engine", "letter", "winter", "orange", "silver"]
    return [
        " ".join(f"{words[(i + j) % len(words)]}{j % 7}" for j in range(28)) + f" city {i}{tag}" for i in range(count)
    ]


@pytest.mark.slow
def test_a_killed_server_fails_its_users_clearly_launch_sh_brings_it_back_and_sigterm_stops_all(
    tmp_path: Path, log_dir: Path
) -> None:
    server_port, page_port = free_port(), free_port()
    server_url, page_url = f"http://127.0.0.1:{server_port}", f"http://127.0.0.1:{page_port}/"
    request_timeout = 60
    output = tmp_path / "launch.out"
    with output.open("w") as out:
        proc = subprocess.Popen(
            ["./launch.sh"],
            cwd=REPO_ROOT,
            env=launch_env(
                RERANK_PORT=str(server_port),
                RERANK_UI_PORT=str(page_port),
                RERANK_TIMEOUT=str(request_timeout),
                RERANK_CONCURRENCY="2",
                RERANK_QUEUE_SIZE="8",
                # Skips torch.compile: the restarts are what is tested, not the compiled path.
                RERANK_VLLM_ARGS="--enforce-eager",
                # Its own logs (kept with the run's) and launcher lock: the fleet test's launcher
                # may run beside it, and the product's logs/ may be in use.
                RERANK_LOG_DIR=str(log_dir / f"launch-faults-{page_port}"),
            ),
            stdin=None,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            preexec_fn=lambda: os.close(0),  # stdin closed altogether, not even /dev/null
        )

    def said(pattern: str) -> bool:
        """Whether launch.sh has printed `pattern` yet; fails at once if launch.sh has exited."""
        assert proc.poll() is None, f"launch.sh exited with {proc.returncode}:\n{output.read_text()}"
        return re.search(pattern, output.read_text()) is not None

    client: Client | None = None
    try:
        # The page starts beside vLLM; the launcher's last line says both are ready.
        wait_until(lambda: said(r"launch: ready: ") and listener(page_port) is not None, "the product", 900, 1)
        page_pid = listener(page_port)
        client = Client(page_url, verbose=False)
        assert_same_ranking(page_table(rerank(client, "\n".join(CAPITALS))), server_table(server_url, CAPITALS))

        # Requests in flight, more waiting in the page's queue; then vLLM dies without warning.
        scored_before = prompt_tokens_scored(server_url)
        jobs = [submit(client, "\n".join(long_documents(1000, f" job {job}")), top_n=5) for job in range(5)]
        # Kill once vLLM has scored some of the jobs' batches, while the jobs still have more
        # to send (each is a thousand long documents of its own, sent in many batches: a job
        # on documents another has scored would need one short call).
        wait_until(lambda: any(job.status().code == Status.PROCESSING for job in jobs), "a job to start", 120, 0.05)
        wait_until(lambda: prompt_tokens_scored(server_url) > scored_before, "vLLM to score a batch", 120, 0.1)
        assert not all(job.done() for job in jobs), "the jobs ended before the kill"
        (vllm,) = vllm_processes(proc.pid)
        killed_at = time.monotonic()
        vllm.send_signal(signal.SIGKILL)

        failed = 0
        for job in jobs:
            result = job.result(timeout=request_timeout + 60)
            assert time.monotonic() - killed_at < request_timeout, "a user waited past the timeout"
            if result[1].startswith("Ranked"):
                continue  # finished before the kill
            assert_one_line_error(result, "is not reachable: it is starting up or down")
            failed += 1
        assert failed >= 1, "no request was in flight when the server was killed"

        # The page keeps answering, says the server is down, and fails new requests at once.
        assert banner(page_url).startswith("⚠️ **Server not ready.**")
        started = time.monotonic()
        assert_one_line_error(rerank(client, "\n".join(CAPITALS)), "is not reachable: it is starting up or down")
        assert time.monotonic() - started < 10

        # launch.sh restarts vLLM; killed again while starting, it waits twice as long.
        restarted = r"vLLM exited \(killed by SIGKILL\); restarting in 2 s"
        wait_until(lambda: said(restarted), "launch.sh to restart vLLM", 60, 0.2)
        wait_until(lambda: bool(vllm_processes(proc.pid)), "the restarted vLLM", 60, 0.2)
        vllm_processes(proc.pid)[0].send_signal(signal.SIGKILL)
        wait_until(lambda: said(r"restarting in 4 s"), "launch.sh to back off", 60, 0.2)

        # Back on the same port, the page recovers by itself: banner, ranking, every slot free.
        wait_until(lambda: said(r"vLLM is back"), "launch.sh to report vLLM back", 900, 1)
        assert banner(page_url).startswith("✅ Server ready"), banner(page_url)
        expected = server_table(server_url, CAPITALS)
        results = [job.result(timeout=120) for job in [submit(client, "\n".join(CAPITALS)) for _ in range(3)]]
        for result in results:
            assert_same_ranking(page_table(result), expected)
        assert listener(page_port) == page_pid, "the page was restarted; it should have ridden the crash out"

        # SIGTERM to the launcher alone stops all it started, the restarted vLLM included.
        family = [proc.pid] + [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
        assert len(family) >= 4  # the supervisor, vLLM's API server and engine, the page
        proc.terminate()
        assert proc.wait(timeout=STOP_DEADLINE_S) == 0, output.read_text()
        wait_until(lambda: not any(alive(pid) for pid in family), "everything launch.sh started to stop", 10, 0.2)
        assert listener(server_port) is None and listener(page_port) is None
    finally:
        if client is not None:
            client.close()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
