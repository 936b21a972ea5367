"""One `python -m server serve ...` for the length of a measurement.

    with ServedConfig(serve_args, port, log_path) as served:   # returns once /health answers
        served.url, served.startup_s

The launcher runs vLLM in its own process group and stops that whole group when it gets
SIGTERM, so stopping means SIGTERM to the launcher we started (by its pid), a grace
period, then SIGKILL to that pid alone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import httpx

STOP_GRACE_S = 45.0
"""The launcher gives vLLM 20 s to stop its engine before killing it; allow for that."""


class ServerStartError(RuntimeError):
    """The server exited or did not answer /health in time; str() ends with its log's tail."""


def launcher_argv(serve_args: list[str], port: int, log_path: Path | None = None, dry_run: bool = False) -> list[str]:
    argv = [sys.executable, "-m", "server", "serve", *serve_args, "--port", str(port)]
    if log_path is not None:
        argv += ["--log-file", str(log_path)]
    if dry_run:
        argv.append("--dry-run")
    return argv


def vllm_command(serve_args: list[str], port: int, repo: Path) -> str:
    """The vLLM command line the launcher would run (its --dry-run)."""
    done = subprocess.run(
        launcher_argv(serve_args, port, dry_run=True), cwd=repo, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise ServerStartError(f"python -m server serve --dry-run failed: {done.stderr.strip()}")
    return done.stdout.strip()


def _tail(path: Path, lines: int = 40) -> str:
    if not path.is_file():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


class ServedConfig:
    def __init__(self, serve_args: list[str], port: int, log_path: Path, repo: Path, timeout_s: float = 480) -> None:
        self.argv = launcher_argv(serve_args, port, log_path)
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self.repo = repo
        self.timeout_s = timeout_s
        self.startup_s = 0.0
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ServedConfig:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        self._proc = subprocess.Popen(
            self.argv,
            cwd=self.repo,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,  # the launcher tees vLLM's output into log_path too
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.perf_counter() - start
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _wait_healthy(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise ServerStartError(f"the server exited with code {self._proc.returncode}:\n{_tail(self.log_path)}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise ServerStartError(f"no answer on {self.url}/health after {self.timeout_s:.0f} s:\n{_tail(self.log_path)}")

    def stop(self) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        children = _children(proc.pid)
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
            # The launcher could not stop vLLM: end the process groups it started for it.
            for child in children:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(child, signal.SIGKILL)


def _children(pid: int) -> list[int]:
    """Direct children of `pid` (Linux /proc); the launcher starts vLLM as a group leader."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    try:
        return [int(p) for p in path.read_text().split()]
    except OSError:
        return []
