"""The test session's servers: bench/server_process.py's ServerProcess, with the tests' conventions.

Like vLLM's RemoteOpenAIServer: a subprocess on a free loopback port, /health polled, and on
failure the server's own log in the test output. Starting, waiting and stopping are
ServerProcess's (one wrapper for bench/ and tests/); this adds only the naming of logs by
profile and port, and the served model's name from the profile.
"""

from __future__ import annotations

from pathlib import Path

from bench.server_process import REPO as REPO_ROOT
from bench.server_process import ServerProcess, free_port

RunningServer = ServerProcess
"""The type the fixtures hand out, under the name the tests know it by."""

__all__ = ["REPO_ROOT", "RunningServer", "free_port", "start_server"]


def start_server(profile: str, model: str | None, log_dir: Path, *args: str, port: int | None = None) -> ServerProcess:
    """Launch without waiting (call .wait()), so that several servers can start side by side.
    `port`: a given one (a server restarted where it was), else a free one."""
    port = port or free_port()
    serve_args = ["--profile", profile, *(["--model", model] if model else []), *args]
    served = model or _profile_model(profile)
    return ServerProcess(serve_args, port, log_dir / f"{profile}-{port}.log", model=served).start()


def _profile_model(profile: str) -> str:
    from server.profiles import get_profile

    return get_profile(profile).model
