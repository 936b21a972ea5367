"""./launch.sh end to end, as a user runs it: CPU default, rank through the page, Ctrl-C."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from gradio_client import Client

from tests.support.server_process import REPO_ROOT, RunningServer, free_port

DOCUMENTS = ["Paris is the capital of France.", "Beijing is the capital of China.", "Pandas eat bamboo."]


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def rank_through_page(page_port: int) -> list[list[object]]:
    """The ranked table rows for DOCUMENTS, asked of the page as a user's browser would."""
    client = Client(f"http://127.0.0.1:{page_port}", verbose=False)
    try:
        result = client.predict(
            "what is the capital of China?", "", "\n".join(DOCUMENTS), "One per line", None, None, 10,
            api_name="/rerank",
        )  # fmt: skip
    finally:
        client.close()
    return result[0]["data"]  # type: ignore[no-any-return]


def launch_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RERANK_")}
    # The tests' own virtualenv, so that launch.sh finds it installed and starts at once.
    return {**env, "RERANK_VENV": sys.prefix, "GRADIO_ANALYTICS_ENABLED": "False", **extra}


@pytest.fixture(scope="module")
def launched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[subprocess.Popen[str], int, int, Path]]:
    server_port, page_port = free_port(), free_port()
    output = tmp_path_factory.mktemp("launch") / "launch.out"
    with output.open("w") as out:
        proc = subprocess.Popen(
            ["./launch.sh"],
            cwd=REPO_ROOT,
            env=launch_env(RERANK_PORT=str(server_port), RERANK_UI_PORT=str(page_port)),
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group, as a terminal's foreground job
        )
    deadline = time.monotonic() + 900
    while not port_open(page_port):
        assert proc.poll() is None, f"launch.sh exited with {proc.returncode}:\n{output.read_text()}"
        assert time.monotonic() < deadline, f"the page never came up:\n{output.read_text()}"
        time.sleep(2)
    yield proc, server_port, page_port, output
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)


def test_launch_ranks_through_the_page_and_ctrl_c_leaves_nothing_behind(
    launched: tuple[subprocess.Popen[str], int, int, Path],
) -> None:
    proc, server_port, page_port, output = launched
    said = output.read_text()
    assert "no NVIDIA GPU found: serving the bundled all-MiniLM-L6-v2 on the CPU (profile cpu)" in said

    table = rank_through_page(page_port)
    assert len(table) == 3
    assert table[0][4] == 2  # Beijing, the second document, ranks first
    served = httpx.post(
        f"http://127.0.0.1:{server_port}/v1/rerank",
        json={"model": "sentence-transformers/all-MiniLM-L6-v2", "query": "what is the capital of China?",
              "documents": DOCUMENTS},
        timeout=60,
    ).json()["results"]  # fmt: skip
    assert [row[1] for row in table] == [round(r["relevance_score"], 4) for r in served]

    # A second launcher in the same checkout says so plainly instead of failing obscurely.
    second = subprocess.run(
        ["./launch.sh", "--server-port", str(free_port()), "--port", str(free_port())],
        cwd=REPO_ROOT, env=launch_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert second.returncode == 1
    assert second.stderr.strip().splitlines()[-1].startswith("launch: already running: pid")

    family = [proc.pid] + [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
    # vLLM's engine runs in a session of its own: find it by the port it serves.
    family += [c.pid for c in psutil.net_connections("tcp") if c.laddr and c.laddr.port == server_port and c.pid]
    assert len(family) >= 3  # launch.sh, the server launcher, vLLM, the page

    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
    assert proc.wait(timeout=120) in (0, 130)
    deadline = time.monotonic() + 30
    while any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in family):
        assert time.monotonic() < deadline, [psutil.Process(p).cmdline() for p in family if psutil.pid_exists(p)]
        time.sleep(0.5)
    assert not port_open(server_port) and not port_open(page_port)
    assert "stopping" in output.read_text()


def test_help_lists_every_option_and_variable() -> None:
    out = subprocess.run(["./launch.sh", "--help"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0
    for word in (
        "--profile", "--model", "--server-port", "--server-url", "--port", "--host", "--share", "--auth",
        "--concurrency", "--queue-size", "--api-key", "RERANK_PROFILE", "RERANK_MODEL", "RERANK_PORT",
        "RERANK_SERVER_URL", "RERANK_UI_PORT", "RERANK_UI_HOST", "RERANK_SHARE", "RERANK_AUTH",
        "RERANK_CONCURRENCY", "RERANK_QUEUE_SIZE", "RERANK_API_KEY", "RERANK_VENV",
    ):  # fmt: skip
        assert word in out.stdout, word


def test_an_external_server_is_checked_then_used_and_left_running(minilm_server: RunningServer) -> None:
    page_port = free_port()
    proc = subprocess.Popen(
        ["./launch.sh", "--server-url", minilm_server.url, "--port", str(page_port)],
        cwd=REPO_ROOT, env=launch_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while not port_open(page_port):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.stdout else ""
            time.sleep(1)
        assert rank_through_page(page_port)[0][4] == 2
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert f"using the vLLM server at {minilm_server.url} (none started here)" in out
    assert "sentence-transformers/all-MiniLM-L6-v2 at" in out and "reranks (window 256 tokens)" in out
    assert httpx.get(f"{minilm_server.url}/health", timeout=10).status_code == 200  # not ours to stop


def test_an_external_server_that_is_down_fails_in_one_line() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    out = subprocess.run(
        ["./launch.sh", "--server-url", url, "--port", str(free_port())],
        cwd=REPO_ROOT, env=launch_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert lines[-1] == f"launch: {url} is not a usable reranker server"
    assert lines[-2] == f"error: {url}: The rerank server is not reachable: it is starting up or down."
