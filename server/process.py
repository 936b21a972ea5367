"""Run vLLM as its own process group, its output teed to the console and a log file."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

from server.command import ServeCommand
from server.failures import diagnose

REPO_ROOT = Path(__file__).resolve().parent.parent
STOP_GRACE_S = 20.0
"""vLLM needs a few seconds to shut its engine processes down before we kill them."""


class StartupError(RuntimeError):
    """vLLM could not be started; str() is one line for the user."""


def check_port_free(host: str, port: int) -> None:
    """Fail in one line now rather than after a minute of vLLM startup."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror}; pick another --port") from None


def run_server(command: ServeCommand, log_path: Path, echo: IO[str] | None = sys.stdout) -> int:
    """Run until vLLM exits or we are told to stop; returns vLLM's exit code.

    SIGINT and SIGTERM stop the whole process group (the API server and its engine
    processes) with a grace period, so no orphan keeps the GPU or the port.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **command.env}
    # The --middleware import path (server.auth) must resolve inside vLLM's process.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    # Appended, not overwritten: after a crash, launch.sh restarts vLLM into the same log,
    # and the crash it just pointed the user to must still be there.
    with log_path.open("a", encoding="utf-8", errors="replace") as log:
        log.write(f"===== {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(command.argv)}\n")
        log.flush()
        proc = subprocess.Popen(
            command.argv,
            env=env,
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent,
            text=True,
            errors="replace",
        )
        tee = threading.Thread(target=_tee, args=(proc.stdout, log, echo), daemon=True)
        tee.start()
        stop = _Stopper(proc)
        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            code = proc.wait()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            stop.kill_group()
            tee.join(timeout=5)
    return code


def _die_with_parent() -> None:
    """In the child: get SIGTERM if this launcher dies, even by SIGKILL.

    vLLM runs in its own process group so that Ctrl-C reaches it only through us; the
    price is that nothing else would stop it if we were killed outright.
    """
    if sys.platform == "linux":
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def describe_exit(code: int, log_path: Path) -> str:
    text = log_path.read_text(errors="replace") if log_path.is_file() else ""
    last_run = text[text.rfind("\n===== ") + 1 :]  # this run's part of the appended log
    return f"{diagnose(last_run)}; log: {log_path}"


class _Stopper:
    REPEAT_S = 2.0
    """A second signal sooner than this is the same stop (Ctrl-C reaches launch.sh and
    us both, and launch.sh then sends SIGTERM); a later one means "stop now"."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.first_signal: float | None = None

    def __call__(self, signum: int, frame: object) -> None:
        now = time.monotonic()
        if self.first_signal is not None:
            if now - self.first_signal > self.REPEAT_S:
                self._signal_group(signal.SIGKILL)
            return
        self.first_signal = now
        self._signal_group(signal.SIGTERM)
        threading.Thread(target=self._kill_after_grace, daemon=True).start()

    def _kill_after_grace(self) -> None:
        try:
            self.proc.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            self._signal_group(signal.SIGKILL)

    def kill_group(self) -> None:
        """After vLLM's main process is gone, end whatever it left in its group."""
        self._signal_group(signal.SIGKILL)

    def _signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)


def _tee(source: IO[str] | None, log: IO[str], echo: IO[str] | None) -> None:
    if source is None:
        return
    for line in source:
        log.write(line)
        log.flush()
        if echo is not None:
            echo.write(line)
            echo.flush()
