"""bench/server_process.py, the one wrapper bench/ and the tests start servers with, on small
real children (no vLLM): waited for until they answer, stopped as Ctrl-C would, and a child
that dies or stays silent reported with its own last words.

    .venv/bin/python -m pytest tests/test_bench_server_process.py -q
"""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest

from bench.server_process import ChildProcess, ServerStartError, free_port


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


def test_a_child_that_answers_is_waited_for_then_stopped_by_sigint(tmp_path: Path) -> None:
    port = free_port()
    argv = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    with ChildProcess(argv, f"http://127.0.0.1:{port}", tmp_path / "http.log", health_path="/") as child:
        assert httpx.get(f"{child.url}/", timeout=10).status_code == 200
        assert child.startup_s > 0
    assert child.process.returncode == 0, "http.server exits cleanly on KeyboardInterrupt, not by SIGKILL"


def test_a_child_that_dies_is_reported_with_its_last_words(tmp_path: Path) -> None:
    log = tmp_path / "child.log"
    argv = [sys.executable, "-c", "import sys; print('cannot bind the port', file=sys.stderr); sys.exit(3)"]
    child = ChildProcess(argv, f"http://127.0.0.1:{free_port()}", log, health_path="/", explain=last_line)
    with pytest.raises(ServerStartError) as raised, child:
        pass
    assert str(raised.value).splitlines()[0] == f"server exited during startup: cannot bind the port; log: {log}"
    assert child.process.returncode == 3


def test_a_silent_child_times_out_and_is_stopped(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    argv = [sys.executable, "-c", "import time; time.sleep(600)"]
    child = ChildProcess(argv, url, tmp_path / "silent.log", timeout_s=1)
    with pytest.raises(ServerStartError) as raised, child:
        pass
    assert str(raised.value).startswith(f"server at {url} not healthy after 1 s")
    assert child.process.returncode is not None, "the silent child was stopped"
