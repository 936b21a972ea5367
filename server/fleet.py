"""A fleet: vLLM servers that already run elsewhere, behind vllm-router, for one page.

    python -m server fleet --servers http://gpu1:8000,http://gpu2:8000 --port 30000 --api-key KEY

Checks that each server reranks (the page's own check), then runs vllm-router (vLLM's Rust
router, `server/router.py`) as a child in its own process group, waits until it answers, and
stops it on Ctrl-C or SIGTERM (and it dies with us, even on SIGKILL). The page then points at
the router with `--server-url` and reranks through `/v2/rerank` (see README, "Scaling out").

Routing is vllm-router's consistent hash on the page's `X-Session-Id` (one per query and
instruction), so every request of one query lands on the same server and its prefix cache
keeps the shared system prompt, instruction and query. The router's health checks take a dead
server out within seconds and put it back once it answers again.

With a key, the router itself refuses every route without it: it asks a key-check endpoint
that this process serves on loopback (the same constant-time check as `server/auth.py`), and
the page's key travels on to each server, which checks it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

from server.auth import bearer_matches
from server.command import ServeCommand
from server.failures import last_lines
from server.process import REPO_ROOT, check_port_free, run_server
from server.router import CONFIG_ENV, KEY_ENV

PAGE_JOBS_PER_SERVER = 4
"""The page's default concurrency for one server (webui/settings.py), scaled by the fleet."""


class FleetError(RuntimeError):
    """The fleet cannot start; str() is one line for the user."""


@dataclass(frozen=True)
class FleetOptions:
    servers: tuple[str, ...]
    """Base URLs of running `python -m server serve` instances, one per host (or port)."""
    host: str = "127.0.0.1"
    """Loopback by default; another address needs an API key (the router's admin routes)."""
    port: int = 30000
    """vllm-router's customary port."""
    api_key: str | None = None
    """The servers' key; the router then requires it on every route too."""
    router_metrics_port: int | None = None
    """The router's own Prometheus exporter, on loopback (it cannot be turned off); None: port + 1."""
    health_interval_s: int = 1
    """Router health checks: a dead server leaves the rotation after two misses, 1-2 s."""
    check_timeout_s: float = 60.0
    """Per server, for the startup check (one small rerank; a loaded CPU server is slow)."""
    startup_timeout_s: float = 60.0
    """For the router to answer after it was started."""
    log_file: Path | None = None
    """The router's log; None: logs/router-PORT.log."""

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def metrics_port(self) -> int:
        return self.router_metrics_port or self.port + 1

    @property
    def log_path(self) -> Path:
        return self.log_file or REPO_ROOT / "logs" / f"router-{self.port}.log"


@dataclass(frozen=True)
class ServerCheck:
    url: str
    reranks: bool
    reachable: bool
    message: str
    """One line: what the server serves, or why it cannot rerank."""
    model: str = ""


def parse_servers(text: str) -> tuple[str, ...]:
    """ "http://a:8000, http://b:8000/" -> ("http://a:8000", "http://b:8000"); FleetError if bad."""
    urls = tuple(part.strip().rstrip("/") for part in text.split(",") if part.strip())
    if not urls:
        raise FleetError("--servers needs at least one URL, e.g. http://gpu1:8000,http://gpu2:8000")
    bad = [url for url in urls if not url.startswith(("http://", "https://"))]
    if bad:
        raise FleetError(f"server URLs must start with http:// or https://: {', '.join(bad)}")
    if len(set(urls)) != len(urls):
        raise FleetError("a server is listed twice in --servers")
    return urls


async def _check_one(url: str, api_key: str | None, timeout: float) -> ServerCheck:
    # The page's own check (what `launch.sh --server-url` runs), so a fleet admits exactly
    # the servers the page could use on their own.
    from webui.check import check_reranker
    from webui.client import RerankClient, RerankError, ServerTimeout, ServerUnavailable
    from webui.settings import Settings

    settings = Settings(server_url=url, api_key=api_key, timeout=timeout)
    try:
        message = await check_reranker(settings)
    except (ServerUnavailable, ServerTimeout) as error:
        return ServerCheck(url, reranks=False, reachable=False, message=_naming(url, str(error)))
    except RerankError as error:
        return ServerCheck(url, reranks=False, reachable=True, message=_naming(url, str(error)))
    client = RerankClient(url, timeout=timeout, max_connections=1, api_key=api_key)
    try:
        model = (await client.model_info()).model_id
    finally:
        await client.aclose()
    return ServerCheck(url, reranks=True, reachable=True, message=message, model=model)


def _naming(url: str, message: str) -> str:
    return message if url in message else f"{url}: {message}"


def check_servers(servers: Sequence[str], api_key: str | None, timeout: float) -> list[ServerCheck]:
    """Check every server side by side; raise FleetError if the fleet cannot serve.

    A server that does not answer yet is kept (the router takes it in once it is healthy);
    one that answers but cannot rerank, or serves another model, is a configuration error.
    """

    async def check_all() -> list[ServerCheck]:
        return list(await asyncio.gather(*(_check_one(url, api_key, timeout) for url in servers)))

    checks = asyncio.run(check_all())
    wrong = [check for check in checks if check.reachable and not check.reranks]
    if wrong:
        raise FleetError("; ".join(check.message for check in wrong))
    models = {check.model for check in checks if check.reranks}
    if len(models) > 1:
        raise FleetError(f"the servers serve different models ({', '.join(sorted(models))}): one model per fleet")
    if not models:
        reasons = "; ".join(check.message for check in checks)
        raise FleetError(f"no server reranks: {reasons}")
    return checks


class KeyCheck:
    """The router's client-key check: GET / answers 200 for "Bearer <key>", else 401.

    vllm-router forwards each request's Authorization header to its `api_key_validation_urls`
    before it routes anything (its own /health, /metrics and admin routes included). Loopback
    only; nothing else is served.
    """

    def __init__(self, api_key: str) -> None:
        expected = api_key

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                ok = bearer_matches(self.headers.get("Authorization", ""), expected)
                self.send_response(200 if ok else 401)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass  # one line per request would bury the router's own log

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/"
        self._thread = threading.Thread(target=self._server.serve_forever, name="fleet-key-check", daemon=True)

    def __enter__(self) -> KeyCheck:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def router_config(options: FleetOptions, key_check_url: str | None) -> dict[str, object]:
    """vllm-router's Router(...) arguments (server/router.py turns the policy name into its enum)."""
    return {
        "worker_urls": list(options.servers),
        # consistent_hash keys on the X-Session-Id header the page sends per query.
        "policy": "ConsistentHash",
        "host": options.host,
        "port": options.port,
        "api_key_validation_urls": [key_check_url] if key_check_url else [],
        "prometheus_host": "127.0.0.1",
        "prometheus_port": options.metrics_port,
        "health_check_interval_secs": options.health_interval_s,
        "health_check_timeout_secs": 5,
        "health_failure_threshold": 2,
        "health_success_threshold": 1,
        # Meanwhile a dead server fails each request in milliseconds: after 3 failures in a
        # row the router's circuit breaker stops sending it any (it probes again after 5 s).
        "cb_failure_threshold": 3,
        "cb_timeout_duration_secs": 5,
        # At least one server reranks (checked above); the router still waits for one healthy.
        "worker_startup_timeout_secs": int(options.startup_timeout_s),
        "worker_startup_check_interval": 1,
        # Its INFO lines name each request's hash key, which can be the query: private text.
        "log_level": "warn",
    }


def page_concurrency(healthy: int) -> int:
    return PAGE_JOBS_PER_SERVER * max(1, healthy)


def router_answers(url: str, api_key: str | None) -> bool:
    """Does the router answer at all? Its /health says 503 while any server is down, and 401
    without the key; both mean the router itself is up."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        httpx.get(f"{url}/health", headers=headers, timeout=2.0)
    except httpx.HTTPError:
        return False
    return True


def run_fleet(options: FleetOptions) -> int:
    """Check the servers, run the router until it exits or we are stopped; the exit code."""
    if options.host not in ("127.0.0.1", "localhost", "::1") and not options.api_key:
        raise FleetError(
            f"refusing to listen on {options.host} without --api-key: the router's routes, "
            "adding and removing servers included, would answer anyone"
        )
    if importlib.util.find_spec("vllm_router_rs") is None:
        raise FleetError("vllm-router is not installed here: server/install.sh --with-fleet installs it")
    check_port_free(options.host, options.port)
    # Checked too: vllm-router panics on a taken metrics port, and its message names no port.
    check_port_free("127.0.0.1", options.metrics_port, "--metrics-port")
    checks = check_servers(options.servers, options.api_key, options.check_timeout_s)
    for check in checks:
        state = "ok" if check.reranks else "not answering yet (taken in when healthy)"
        print(f"fleet: {check.url}: {state}: {check.message}", file=sys.stderr)
    healthy = sum(check.reranks for check in checks)

    env = {CONFIG_ENV: "", "NO_COLOR": "1"}  # plain text in the log
    if options.api_key:
        env[KEY_ENV] = options.api_key
    key_check = KeyCheck(options.api_key) if options.api_key else None
    with key_check or contextlib.nullcontext():
        env[CONFIG_ENV] = json.dumps(router_config(options, key_check.url if key_check else None))
        command = ServeCommand(argv=[sys.executable, "-m", "server.router"], env=env, plan=None)
        print(
            f"fleet: starting vllm-router on {options.url} in front of {len(options.servers)} servers "
            f"({healthy} rerank now); log {options.log_path}",
            file=sys.stderr,
        )
        watcher = _ReadyWatcher(options, healthy)
        watcher.start()
        try:
            code = run_server(command, options.log_path, echo=None)
        finally:
            watcher.done.set()
    if watcher.failed:
        print(f"error: {watcher.failed}", file=sys.stderr)
        tail = last_lines(options.log_path, 5)
        if tail:
            print(tail, file=sys.stderr)
        return 1
    if code not in (0, -2, -15, 130, 143):
        print(f"error: vllm-router exited with code {code}; log: {options.log_path}", file=sys.stderr)
        print(last_lines(options.log_path, 5), file=sys.stderr)
        return 1
    return 0


class _ReadyWatcher(threading.Thread):
    """Says when the router answers; stops the fleet (SIGTERM to us) if it never does."""

    def __init__(self, options: FleetOptions, healthy: int) -> None:
        super().__init__(name="fleet-ready", daemon=True)
        self.options = options
        self.healthy = healthy
        self.failed = ""
        self.done = threading.Event()
        """Set once the router has exited: nothing left to watch or stop."""

    def run(self) -> None:
        deadline = time.monotonic() + self.options.startup_timeout_s
        while time.monotonic() < deadline and not self.done.is_set():
            if not router_answers(self.options.url, self.options.api_key):
                time.sleep(0.5)
                continue
            print(
                f"fleet: router ready at {self.options.url}; point the page at it: python -m webui "
                f"--server-url {self.options.url} --rerank-path /v2/rerank "
                f"--metrics-urls {','.join(self.options.servers)} "
                f"--concurrency {page_concurrency(self.healthy)}" + (" --api-key ..." if self.options.api_key else ""),
                file=sys.stderr,
                flush=True,
            )
            return
        if self.done.is_set():
            return
        self.failed = f"vllm-router did not answer at {self.options.url} within {self.options.startup_timeout_s:g} s"
        os.kill(os.getpid(), signal.SIGTERM)  # run_server's handler stops the router's group
