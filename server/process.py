"""Run a child (vLLM, the page) as its own process group that dies with us, its output
copied line by line into a log file (and, when asked, to the console)."""

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
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

from server.command import ServeCommand
from server.failures import diagnose

REPO_ROOT = Path(__file__).resolve().parent.parent
STOP_GRACE_S = 20.0
"""vLLM needs a few seconds to shut its engine processes down before we kill them."""
RUN_MARKER = "===== "
"""Starts each run's part of an appended log: a failure is read from the last run only."""


class StartupError(RuntimeError):
    """vLLM could not be started; str() is one line for the user."""


def check_port_free(host: str, port: int, flag: str = "--port") -> None:
    """Fail in one line now rather than after a minute of vLLM startup."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror}; pick another {flag}") from None


def child_env(extra: Mapping[str, str]) -> dict[str, str]:
    """The caller's environment plus `extra`, with this checkout importable (vLLM imports
    the --middleware server.auth) and output unbuffered (progress is read from it live)."""
    env = {**os.environ, **extra}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


class ChildProcess:
    """One run of a child: its own session (a Ctrl-C reaches it only through us, so we stop
    things in order), SIGTERM when we die however we die, output appended to `log_path`.

    Call start() and stop() from the main thread: PR_SET_PDEATHSIG fires when the *thread*
    that forked the child ends, so a child started from a worker thread would die with it.
    """

    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        log_path: Path,
        *,
        echo: IO[str] | None = None,
        on_line: Callable[[str], None] | None = None,
    ) -> None:
        self.argv = list(argv)
        self.env = dict(env)
        self.log_path = log_path
        self.echo = echo
        self.on_line = on_line
        self.proc: subprocess.Popen[str] | None = None
        self._copier: threading.Thread | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # Appended, not overwritten: after a crash the child is restarted into the same
        # log, and the crash the user was just pointed to must still be there.
        log = self.log_path.open("a", encoding="utf-8", errors="replace")
        log.write(f"{RUN_MARKER}{time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(self.argv)}\n")
        log.flush()
        self.proc = subprocess.Popen(
            self.argv,
            env=self.env,
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent,
            text=True,
            errors="replace",
        )
        self._copier = threading.Thread(target=self._copy_output, args=(log,), daemon=True)
        self._copier.start()

    def poll(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def signal_group(self, sig: int) -> None:
        """The child's whole group: vLLM's API server and the engine processes it started."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, sig)

    def wait(self, timeout: float | None = None) -> int | None:
        """The exit code, or None if still running after `timeout`."""
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def finish(self) -> None:
        """After the main process is gone: end whatever it left in its group, flush the log."""
        self.signal_group(signal.SIGKILL)
        if self._copier is not None:
            self._copier.join(timeout=5)

    def last_run_log(self) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.is_file() else ""
        return text[text.rfind("\n" + RUN_MARKER) + 1 :]

    def _copy_output(self, log: IO[str]) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        with log:
            for line in self.proc.stdout:
                log.write(line)
                log.flush()
                if self.echo is not None:
                    self.echo.write(line)
                    self.echo.flush()
                if self.on_line is not None:
                    self.on_line(line)


def stop_children(children: Sequence[ChildProcess], grace: float) -> None:
    """SIGTERM every child's group at once, SIGKILL what is left after `grace` seconds."""
    running = [c for c in children if c.poll() is None]
    for child in running:
        child.signal_group(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for child in running:
        child.wait(timeout=max(0.0, deadline - time.monotonic()))
    for child in children:
        child.finish()
        child.wait(timeout=5)


def run_server(command: ServeCommand, log_path: Path, echo: IO[str] | None = sys.stdout) -> int:
    """Run until vLLM exits or we are told to stop; returns vLLM's exit code.

    SIGINT and SIGTERM stop the whole process group (the API server and its engine
    processes) with a grace period, so no orphan keeps the GPU or the port.
    """
    child = ChildProcess(command.argv, child_env(command.env), log_path, echo=echo)
    child.start()
    stop = _Stopper(child)
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        child.finish()
    return code if code is not None else 1


def _die_with_parent() -> None:
    """In the child: get SIGTERM if this launcher dies, even by SIGKILL.

    The child runs in its own process group so that Ctrl-C reaches it only through us; the
    price is that nothing else would stop it if we were killed outright.
    """
    if sys.platform == "linux":
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def describe_exit(code: int, log_path: Path) -> str:
    text = log_path.read_text(errors="replace") if log_path.is_file() else ""
    last_run = text[text.rfind("\n" + RUN_MARKER) + 1 :]  # this run's part of the appended log
    return f"{diagnose(last_run)}; log: {log_path}"


class _Stopper:
    REPEAT_S = 2.0
    """A second signal sooner than this is the same stop (Ctrl-C reaches the whole group,
    and a wrapper may then send SIGTERM); a later one means "stop now"."""

    def __init__(self, child: ChildProcess) -> None:
        self.child = child
        self.first_signal: float | None = None

    def __call__(self, signum: int, frame: object) -> None:
        now = time.monotonic()
        if self.first_signal is not None:
            if now - self.first_signal > self.REPEAT_S:
                self.child.signal_group(signal.SIGKILL)
            return
        self.first_signal = now
        self.child.signal_group(signal.SIGTERM)
        threading.Thread(target=self._kill_after_grace, daemon=True).start()

    def _kill_after_grace(self) -> None:
        if self.child.wait(timeout=STOP_GRACE_S) is None:
            self.child.signal_group(signal.SIGKILL)
