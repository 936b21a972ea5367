"""Start the project's own launcher (`python -m server serve`) for a test session.

Like vLLM's RemoteOpenAIServer: a subprocess on a free loopback port, /health polled,
and on failure the server's own log in the test output.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from server.health import ServerNotReady, wait_healthy

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RunningServer:
    profile: str
    model: str
    """The served model name (what requests put in "model")."""
    port: int
    log_path: Path
    process: subprocess.Popen[bytes]
    extra: list[str] = field(default_factory=list)

    @property
    def launcher_log(self) -> Path:
        """The launcher's own stderr (its one-line errors); vLLM's output is in log_path."""
        return self.log_path.with_suffix(".launcher.log")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait(self, timeout: float = 600.0) -> None:
        try:
            wait_healthy(
                self.url, timeout, alive=lambda: self.process.poll() is None, log_path=self.log_path, progress=False
            )
        except ServerNotReady as exc:
            self.stop()
            launcher = self.launcher_log.read_text(errors="replace") if self.launcher_log.is_file() else ""
            raise RuntimeError(
                f"{exc}\n--- launcher said ---\n{launcher}\n--- last lines of {self.log_path} ---\n{exc.log_tail}"
            ) from None

    def stop(self, timeout: float = 30.0) -> None:
        """SIGINT, as Ctrl-C would: the launcher stops vLLM's whole process group."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def start_server(profile: str, model: str | None, log_dir: Path, *args: str) -> RunningServer:
    """Launch without waiting, so that several servers can start side by side."""
    port = free_port()
    log_path = log_dir / f"{profile}-{port}.log"
    argv = [
        sys.executable,
        "-m",
        "server",
        "serve",
        "--profile",
        profile,
        "--port",
        str(port),
        "--log-file",
        str(log_path),
    ]
    if model:
        argv += ["--model", model]
    argv += list(args)
    log_dir.mkdir(parents=True, exist_ok=True)
    with log_path.with_suffix(".launcher.log").open("wb") as launcher_log:
        process = subprocess.Popen(
            argv,
            cwd=REPO_ROOT,
            stdout=subprocess.DEVNULL,  # the launcher tees vLLM's output into log_path
            stderr=launcher_log,
            start_new_session=True,
        )
    served = model or _profile_model(profile)
    return RunningServer(profile=profile, model=served, port=port, log_path=log_path, process=process, extra=list(args))


def _profile_model(profile: str) -> str:
    from server.profiles import get_profile

    return get_profile(profile).model
