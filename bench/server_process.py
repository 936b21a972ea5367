"""One `python -m server serve ...` child: started as a user starts it, waited for, stopped.

    with ServerProcess(["--profile", "cpu"], port, log_path) as served:  # back once /health answers
        served.url, served.startup_s

    server = ServerProcess([...], free_port(), log_path).start()  # several side by side, then
    server.wait(); ...; server.stop()

bench/ and tests/ both drive the product's launcher from outside through this class. It lives
in bench/ because bench/'s programs run on their own (on a GPU host, with no test tooling):
tests/ may import bench/, never the other way. It is not server/'s: the product needs no
harness that starts itself as a child. The /health wait is server/health.py's.
`ChildProcess` is the same for any program with an HTTP answer to wait on (bench starts
the page, `python -m webui`, with it).

The launcher runs vLLM in its own process group and stops that whole group on SIGINT or
SIGTERM, so stopping means SIGINT to the launcher we started (as Ctrl-C), a grace period,
then SIGKILL to the launcher's group and to the groups it started.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self

from server.failures import diagnose
from server.health import ServerNotReady, wait_healthy

if TYPE_CHECKING:
    from starlette.types import ASGIApp

REPO = Path(__file__).resolve().parent.parent
STOP_GRACE_S = 45.0
"""The launcher gives vLLM 20 s to stop its engine before killing it; allow for that."""


class ServerStartError(RuntimeError):
    """The server exited or did not answer /health in time; str() ends with its logs' tails."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serving(app: ASGIApp, timeout_s: float = 30.0) -> Iterator[str]:
    """Serve an ASGI app (a test or bench proxy) on a free loopback port in a thread of this
    process; yields its base URL once it listens."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError(f"the in-process server on port {port} did not start within {timeout_s:g} s")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def launcher_argv(serve_args: list[str], port: int, log_path: Path | None = None, dry_run: bool = False) -> list[str]:
    argv = [sys.executable, "-m", "server", "serve", *serve_args, "--port", str(port)]
    if log_path is not None:
        argv += ["--log-file", str(log_path)]
    if dry_run:
        argv.append("--dry-run")
    return argv


def vllm_command(serve_args: list[str], port: int, repo: Path = REPO) -> str:
    """The vLLM command line the launcher would run (its --dry-run)."""
    done = subprocess.run(
        launcher_argv(serve_args, port, dry_run=True), cwd=repo, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise ServerStartError(f"python -m server serve --dry-run failed: {done.stderr.strip()}")
    return done.stdout.strip()


class ChildProcess:
    """A program started in its own session, waited for until `url` + `health_path` answers 200
    (server/health.py's wait), and stopped as Ctrl-C would stop it."""

    def __init__(
        self,
        argv: list[str],
        url: str,
        output_log: Path,
        *,
        health_path: str = "/health",
        log_path: Path | None = None,
        explain: Callable[[str], str] = diagnose,
        capture_stdout: bool = True,
        cwd: Path = REPO,
        env: Mapping[str, str] | None = None,
        timeout_s: float = 600.0,
    ) -> None:
        """`output_log` gets the child's stderr, and its stdout unless `capture_stdout` is False
        (the launcher tees vLLM's output into its own log). `log_path` is the log that
        `explain` reads for the reason a dead child died (default: `output_log`); `env` adds
        to this process's environment."""
        self.argv = argv
        self.url = url
        self.output_log = output_log
        self.log_path = log_path or output_log
        self.health_path = health_path
        self.explain = explain
        self.capture_stdout = capture_stdout
        self.cwd = cwd
        self.env = {**os.environ, **(env or {})}
        self.timeout_s = timeout_s
        self.startup_s = 0.0
        """Seconds from the launch to the first healthy answer."""
        self._process: subprocess.Popen[bytes] | None = None
        self._started_at = 0.0

    @property
    def process(self) -> subprocess.Popen[bytes]:
        if self._process is None:
            raise RuntimeError(f"{self.argv[:4]} has not been started")
        return self._process

    def start(self) -> Self:
        """Launch without waiting, so that several children can start side by side."""
        self.output_log.parent.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._started_at = time.perf_counter()
        with self.output_log.open("ab") as output:
            self._process = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=output if self.capture_stdout else subprocess.DEVNULL,
                stderr=output,
                start_new_session=True,
                preexec_fn=_hear_sigint if signal.getsignal(signal.SIGINT) is signal.SIG_IGN else None,
            )
        return self

    def wait(self, timeout_s: float | None = None) -> float:
        """Block until healthy; returns startup_s. A dead or silent child is stopped and raises
        ServerStartError with the reason, its own output and the end of `log_path`."""
        process = self.process
        try:
            wait_healthy(
                self.url,
                self.timeout_s if timeout_s is None else timeout_s,
                alive=lambda: process.poll() is None,
                log_path=self.log_path,
                progress=False,
                interval=0.5,
                path=self.health_path,
                explain=self.explain,
            )
        except ServerNotReady as exc:
            self.stop()
            raise ServerStartError(self._failure(exc)) from None
        if not self.startup_s:
            self.startup_s = time.perf_counter() - self._started_at
        return self.startup_s

    def _failure(self, exc: ServerNotReady) -> str:
        parts = [str(exc)]
        if self.output_log != self.log_path and self.output_log.is_file():
            parts += [f"--- {self.output_log} ---", self.output_log.read_text(errors="replace").rstrip()]
        return "\n".join([*parts, f"--- last lines of {self.log_path} ---", exc.log_tail])

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        process = self._process
        if process is None or process.poll() is not None:
            return
        children = _children(process.pid)
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            # The child could not stop its own: end its group and the groups it started.
            for group in (process.pid, *children):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(group, signal.SIGKILL)
            process.wait(timeout=10)

    def __enter__(self) -> Self:
        self.start()
        try:
            self.wait()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class ServerProcess(ChildProcess):
    """`python -m server serve SERVE_ARGS --port PORT --log-file LOG_PATH`."""

    def __init__(
        self,
        serve_args: list[str],
        port: int,
        log_path: Path,
        repo: Path = REPO,
        timeout_s: float = 600.0,
        *,
        model: str = "",
        env: Mapping[str, str] | None = None,
    ) -> None:
        """`model` is the served model name (what requests put in "model"), for callers that
        need it. vLLM's output goes to `log_path`; the launcher's own to `launcher_log`."""
        super().__init__(
            launcher_argv(serve_args, port, log_path),
            f"http://127.0.0.1:{port}",
            log_path.with_suffix(".launcher.log"),
            log_path=log_path,
            capture_stdout=False,
            cwd=repo,
            env=env,
            timeout_s=timeout_s,
        )
        self.port = port
        self.model = model

    @property
    def launcher_log(self) -> Path:
        """The launcher's own stderr (its one-line errors); vLLM's output is in log_path."""
        return self.output_log


def _hear_sigint() -> None:
    """In the child, before exec: SIGINT back to its default. A program started from a
    background job (`cmd &` in a script) inherits SIGINT ignored, and Python then never turns
    it into KeyboardInterrupt, so `stop` could only end such a child by SIGKILL."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _children(pid: int) -> list[int]:
    """Direct children of `pid` (Linux /proc); the launcher starts vLLM as a group leader."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    try:
        return [int(p) for p in path.read_text().split()]
    except OSError:
        return []
