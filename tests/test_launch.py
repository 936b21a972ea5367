"""./launch.sh end to end, as users and their scripts start it: the console, ranking through
the page, and stopping by Ctrl-C and SIGKILL. (A vLLM killed under load, restarted by
launch.sh with a growing pause while the page rides it out, and SIGTERM to a launcher started
without stdin, are test_faults.py's, on its own launcher: each launcher here costs a vLLM start.)

vLLM starts take minutes on 2 cores, so the two launchers start at once, each with its own
log folder (and so its own lock): `product` is what a script run from a terminal starts in the
background (SIGINT ignored at entry, the terminal's foreground group, a pty); it serves most
tests and ends with a ^C typed on that terminal. `killed` ends with SIGKILL of the launcher.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import signal
import socket
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest
from gradio_client import Client

from tests.support.ranking import assert_same_ranking
from tests.support.server_process import REPO_ROOT, RunningServer, free_port

DOCUMENTS = ["Paris is the capital of France.", "Beijing is the capital of China.", "Pandas eat bamboo."]
START_DEADLINE_S = 900
"""vLLM on 2 shared cores: 1-3 min alone, more with two others starting beside it."""
STOP_DEADLINE_S = 10
"""The issue's bound for one Ctrl-C, SIGINT or SIGTERM to stop everything."""
CONSOLE_BUDGET = 15
"""Lines a normal start may print, install excepted (the product is installed here)."""


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


def _as_a_scripts_background_job_on_a_terminal() -> None:
    """`./launch.sh &` in a script run from a terminal: a non-interactive shell starts it with
    SIGINT and SIGQUIT ignored, in the terminal's foreground group. After setsid, stdin (a
    pty) becomes the session's terminal, so ^C typed on it sends SIGINT to the launcher's
    group, as to the script's."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGQUIT, signal.SIG_IGN)
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


@dataclass
class Launched:
    proc: subprocess.Popen[bytes]
    server_port: int
    page_port: int
    output: Path
    log_dir: Path
    terminal: int | None = None
    """The pty's controlling side, for a launcher started on a terminal."""

    def said(self) -> str:
        return self.output.read_text(errors="replace")

    def wait_ready(self) -> None:
        """Until the launcher's final line names the page (or it dies)."""
        deadline = time.monotonic() + START_DEADLINE_S
        while f"launch: ready: http://127.0.0.1:{self.page_port}" not in self.said():
            assert self.proc.poll() is None, f"launch.sh exited with {self.proc.returncode}:\n{self.said()}"
            assert time.monotonic() < deadline, f"the page never came up:\n{self.said()}"
            time.sleep(1)

    def wait_said(self, text: str, after: int = 0, deadline_s: float = START_DEADLINE_S) -> None:
        deadline = time.monotonic() + deadline_s
        while text not in self.said()[after:]:
            assert self.proc.poll() is None, f"launch.sh exited with {self.proc.returncode}:\n{self.said()}"
            assert time.monotonic() < deadline, f"never said {text!r}:\n{self.said()}"
            time.sleep(1)

    def family(self) -> list[int]:
        """The launcher, everything it started (vLLM runs in sessions of its own, but is still
        its child), and whatever listens on the two ports."""
        pids = [self.proc.pid] + [p.pid for p in psutil.Process(self.proc.pid).children(recursive=True)]
        ports = (self.server_port, self.page_port)
        pids += [c.pid for c in psutil.net_connections("tcp") if c.laddr and c.laddr.port in ports and c.pid]
        return sorted(set(pids))

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def start_launcher(tmp: Path, preexec: object = None, stdin: int = subprocess.DEVNULL) -> Launched:
    server_port, page_port = free_port(), free_port()
    output = tmp / "launch.out"
    with output.open("wb") as out:
        proc = subprocess.Popen(
            ["./launch.sh", "--server-port", str(server_port), "--port", str(page_port)],
            cwd=REPO_ROOT,
            env=launch_env(RERANK_LOG_DIR=str(tmp / "logs")),
            stdin=stdin,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # setsid: its own session and process group, no terminal
            preexec_fn=preexec,  # type: ignore[arg-type]
        )
    return Launched(proc, server_port, page_port, output, tmp / "logs")


def wait_all_gone(pids: list[int], deadline_s: float) -> None:
    deadline = time.monotonic() + deadline_s
    while alive := [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]:
        assert time.monotonic() < deadline, [" ".join(psutil.Process(p).cmdline()[:4]) for p in alive]
        time.sleep(0.2)


@pytest.fixture(scope="module")
def launchers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Launched]]:
    terminal, tty = pty.openpty()
    started = {
        "product": start_launcher(
            tmp_path_factory.mktemp("product"), _as_a_scripts_background_job_on_a_terminal, stdin=tty
        ),
        "killed": start_launcher(tmp_path_factory.mktemp("killed")),
    }
    os.close(tty)
    started["product"].terminal = terminal
    yield started
    for launched in started.values():
        launched.stop()
    os.close(terminal)


@pytest.fixture(scope="module")
def product(launchers: dict[str, Launched]) -> Launched:
    launchers["product"].wait_ready()
    return launchers["product"]


@pytest.mark.slow
def test_a_normal_start_prints_a_short_console_ending_with_the_page_address(product: Launched) -> None:
    lines = product.said().strip().splitlines()
    assert len(lines) <= CONSOLE_BUDGET, "\n".join(lines)
    assert lines[0].startswith("launch: profile cpu: no NVIDIA GPU found, so the bundled all-MiniLM-L6-v2 on the CPU")
    assert re.fullmatch(r"launch: memory plan: \d+\.\d\d GiB of RAM .*", lines[1]), lines[1]
    assert any(re.fullmatch(r"launch: vLLM ready \(\d+ s\)", line) for line in lines), lines
    assert lines[-1].startswith(f"launch: ready: http://127.0.0.1:{product.page_port};")
    # vLLM's and Gradio's own output went to the logs, not to the console.
    assert not any(
        word in line for line in lines for word in ("INFO", "WARNING", "Running on local URL", "share=True")
    ), lines
    assert "Starting vLLM server on" in (product.log_dir / f"vllm-{product.server_port}.log").read_text()
    assert f"page: http://127.0.0.1:{product.page_port}" in (product.log_dir / "page.log").read_text()


@pytest.mark.slow
def test_the_page_ranks_with_the_served_scores(product: Launched) -> None:
    table = rank_through_page(product.page_port)
    assert len(table) == 3
    assert table[0][4] == 2  # Beijing, the second document, ranks first
    served = httpx.post(
        f"http://127.0.0.1:{product.server_port}/v1/rerank",
        json={"model": "sentence-transformers/all-MiniLM-L6-v2", "query": "what is the capital of China?",
              "documents": DOCUMENTS},
        timeout=60,
    ).json()["results"]  # fmt: skip
    expected = [(r["index"] + 1, r["relevance_score"]) for r in served]
    assert_same_ranking([(row[4], row[1]) for row in table], expected)


@pytest.mark.slow
def test_a_second_launcher_on_the_same_logs_says_already_running(product: Launched) -> None:
    second = subprocess.run(
        ["./launch.sh", "--server-port", str(free_port()), "--port", str(free_port())],
        cwd=REPO_ROOT, env=launch_env(RERANK_LOG_DIR=str(product.log_dir)), capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert second.returncode == 1
    last = second.stderr.strip().splitlines()[-1]
    assert last.startswith(f"launch: already running: pid {product.proc.pid}, page http://127.0.0.1:")


@pytest.mark.slow
def test_ctrl_c_on_its_terminal_stops_everything_though_sigint_was_ignored_at_entry(product: Launched) -> None:
    ignored = int(re.search(r"SigIgn:\s+([0-9a-f]+)", Path(f"/proc/{product.proc.pid}/status").read_text())[1], 16)
    caught = int(re.search(r"SigCgt:\s+([0-9a-f]+)", Path(f"/proc/{product.proc.pid}/status").read_text())[1], 16)
    sigint = 1 << (signal.SIGINT - 1)
    assert not ignored & sigint and caught & sigint  # the supervisor took SIGINT back
    family = product.family()
    assert len(family) >= 4  # the supervisor, vLLM's API server and engine, the page

    assert product.terminal is not None
    os.write(product.terminal, b"\x03")  # ^C: the terminal sends SIGINT to its foreground group
    assert product.proc.wait(timeout=STOP_DEADLINE_S) == 0
    wait_all_gone(family, STOP_DEADLINE_S)
    assert not port_open(product.server_port) and not port_open(product.page_port)
    assert product.said().strip().splitlines()[-1] == "launch: stopping"
    assert not (product.log_dir / "launch.info").exists()


@pytest.mark.slow
def test_sigkill_of_the_launcher_leaves_nothing_behind_and_no_lock(launchers: dict[str, Launched]) -> None:
    killed = launchers["killed"]
    killed.wait_ready()
    family = killed.family()
    assert len(family) >= 4
    killed.proc.kill()
    killed.proc.wait(timeout=10)
    wait_all_gone(family, 60)  # vLLM gets SIGTERM from the kernel and shuts its engine down
    assert not port_open(killed.server_port) and not port_open(killed.page_port)

    # The lock died with the process: the next launcher on these logs gets past it, to a
    # port check that fails at once (no vLLM is started for this).
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        after = subprocess.run(
            ["./launch.sh", "--server-port", str(port)],
            cwd=REPO_ROOT, env=launch_env(RERANK_LOG_DIR=str(killed.log_dir)), capture_output=True, text=True,
            timeout=120,
        )  # fmt: skip
    assert after.returncode == 1
    assert after.stderr.strip().splitlines()[-1] == (
        f"launch: cannot listen on 127.0.0.1:{port}: Address already in use; pick another --server-port"
    )


def test_help_lists_every_option_and_variable() -> None:
    out = subprocess.run(["./launch.sh", "--help"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0
    for word in (
        "--profile", "--model", "--server-port", "--server-url", "--port", "--host", "--share", "--auth",
        "--concurrency", "--queue-size", "--api-key", "--verbose", "RERANK_PROFILE", "RERANK_MODEL", "RERANK_PORT",
        "RERANK_SERVER_URL", "RERANK_UI_PORT", "RERANK_UI_HOST", "RERANK_SHARE", "RERANK_AUTH",
        "RERANK_CONCURRENCY", "RERANK_QUEUE_SIZE", "RERANK_API_KEY", "RERANK_VENV", "RERANK_VERBOSE",
        "RERANK_LOG_DIR", "RERANK_STARTUP_TIMEOUT",
    ):  # fmt: skip
        assert word in out.stdout, word


def test_an_external_server_is_checked_then_used_and_left_running(minilm_server: RunningServer, tmp_path: Path) -> None:
    page_port = free_port()
    proc = subprocess.Popen(
        ["./launch.sh", "--server-url", minilm_server.url, "--port", str(page_port)],
        cwd=REPO_ROOT, env=launch_env(RERANK_LOG_DIR=str(tmp_path)), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True,
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
    assert "warning" not in out  # the score check passes on MiniLM
    assert httpx.get(f"{minilm_server.url}/health", timeout=10).status_code == 200  # not ours to stop


def test_an_external_server_that_is_down_fails_in_one_line(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    out = subprocess.run(
        ["./launch.sh", "--server-url", url, "--port", str(free_port())],
        cwd=REPO_ROOT, env=launch_env(RERANK_LOG_DIR=str(tmp_path)), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert lines[-1] == f"launch: {url} is not a usable reranker server"
    assert lines[-2] == f"error: {url}: The rerank server is not reachable: it is starting up or down."


@pytest.mark.slow
def test_a_vllm_that_cannot_start_is_explained_in_a_few_lines(tmp_path: Path) -> None:
    server_port = free_port()
    out = subprocess.run(
        ["./launch.sh", "--server-port", str(server_port), "--port", str(free_port())],
        cwd=REPO_ROOT, env=launch_env(RERANK_LOG_DIR=str(tmp_path), RERANK_VLLM_ARGS="--no-such-flag 1"),
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=START_DEADLINE_S,
    )  # fmt: skip
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) <= CONSOLE_BUDGET, out.stderr
    assert lines[-1].startswith("launch: vLLM exited during startup (code 2): vLLM rejected a flag (see --extra-args)")
    assert lines[-1].endswith(f"; log: {tmp_path / f'vllm-{server_port}.log'}")
    assert any("unrecognized arguments: --no-such-flag" in line for line in lines[:-1]), out.stderr
