"""The engine's load, read from the vLLM server's Prometheus `/metrics`.

    state = await fetch_engine_state(client, "http://127.0.0.1:8000")
    poller = EnginePoller("http://127.0.0.1:8000"); state = await poller.latest()

Only three gauges matter here: requests running, requests waiting and KV-cache usage
(`vllm:kv_cache_usage_perc`, formerly `vllm:gpu_cache_usage_perc`). Each sample line carries
`model_name` and `engine` labels; the panel shows the sum over label sets (data-parallel engines).

The text is parsed by prometheus_client's own parser (`metric_samples`, which bench/ uses too).
It is given only the lines of the metrics asked for: vLLM's /metrics has hundreds of lines of
histograms, and a tick on the page's event loop should parse a handful, not all of them.

`EnginePoller` shares one fetch among all viewers: at most one `/metrics` request per interval
whatever the number of open tabs, none while nobody looks, and no tick waits on the network
once a first state exists (stale-while-revalidate).

Behind a fleet router (`python -m server fleet`) the router's own /metrics is one server's, so
the poller reads each server's (`metrics_urls`) side by side and `merge_engine_states` adds
them up, keeping each server's state for the panel to list.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

RUNNING = "vllm:num_requests_running"
WAITING = "vllm:num_requests_waiting"
KV_CACHE_USAGE = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")
ENGINE_GAUGES = (RUNNING, WAITING, *KV_CACHE_USAGE)


@dataclass(frozen=True)
class EngineState:
    reachable: bool
    running: int | None = None
    waiting: int | None = None
    kv_cache_usage: float | None = None
    """Fraction 0..1 of KV-cache blocks in use; with several engines, their mean."""
    engines: int = 0
    """Label sets (engine x model) seen for the running gauge."""
    error: str = ""
    """One line saying why the state is unknown or partial; empty when all is well."""
    timestamp: float = 0.0
    servers: tuple[tuple[str, EngineState], ...] = ()
    """(URL, state) of each server when several were read (a fleet); empty for one server."""


def metric_samples(text: str, names: Iterable[str]) -> list[Sample]:
    """Every sample of the named series (`x_total`, `y_count`: sample names), in file order.

    Only the lines that start with one of the names reach the parser: comments and other
    metrics are never parsed, so a malformed line elsewhere cannot hide these. A malformed
    line among them raises ValueError, as prometheus_client does.
    """
    wanted = tuple(names)
    lines = [line for line in text.splitlines() if line.lstrip().startswith(wanted)]
    families = text_string_to_metric_families("\n".join(lines) + "\n")
    return [sample for family in families for sample in family.samples if sample.name in wanted]


def engine_state_from_metrics(text: str, timestamp: float = 0.0) -> EngineState:
    try:
        samples = metric_samples(text, ENGINE_GAUGES)
    except ValueError as error:
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        return EngineState(reachable=True, error=f"/metrics is not Prometheus text: {first_line}", timestamp=timestamp)
    gauges: dict[str, list[float]] = {name: [] for name in ENGINE_GAUGES}
    for sample in samples:
        gauges[sample.name].append(sample.value)
    running, waiting = gauges[RUNNING], gauges[WAITING]
    kv_values = next((gauges[name] for name in KV_CACHE_USAGE if gauges[name]), [])
    kv_values = [value for value in kv_values if not math.isnan(value)]
    missing = [
        label
        for label, values in (
            ("running", running),
            ("waiting", waiting),
            ("KV cache", kv_values),
        )
        if not values
    ]
    return EngineState(
        reachable=True,
        running=round(sum(running)) if running else None,
        waiting=round(sum(waiting)) if waiting else None,
        kv_cache_usage=sum(kv_values) / len(kv_values) if kv_values else None,
        engines=len(running),
        error=f"/metrics has no vLLM gauge for {', '.join(missing)}" if missing else "",
        timestamp=timestamp,
    )


async def fetch_engine_state(
    client: httpx.AsyncClient,
    server_url: str,
    *,
    timeout_s: float = 2.0,
    clock: Callable[[], float] = time.time,
) -> EngineState:
    """Read `/metrics` once; every failure becomes an unreachable state with a one-line error."""
    url = f"{server_url.rstrip('/')}/metrics"
    try:
        response = await client.get(url, timeout=timeout_s)
        response.raise_for_status()
    except httpx.TimeoutException:
        error = f"No answer from the server's /metrics within {timeout_s:g} s"
    except httpx.ConnectError:
        error = "Cannot connect to the rerank server"
    except httpx.HTTPStatusError as status_error:
        error = f"The server's /metrics answered HTTP {status_error.response.status_code}"
    except httpx.HTTPError as http_error:
        error = f"Reading the server's /metrics failed: {type(http_error).__name__}"
    else:
        return engine_state_from_metrics(response.text, timestamp=clock())
    # The panel is shown to the analyst: the address goes to the operator's log only.
    logging.getLogger(__name__).info("%s (%s)", error, url)
    return EngineState(reachable=False, error=error, timestamp=clock())


def merge_engine_states(states: Sequence[tuple[str, EngineState]], timestamp: float = 0.0) -> EngineState:
    """One state for several servers: counts added, KV-cache usage averaged over their engines.

    Servers are named by their number in `states` (1-based), never by URL: the error is shown
    to the person at the page, who must not learn the servers' internal addresses."""
    up = [state for _, state in states if state.reachable]
    down = [f"server {number}: {state.error}" for number, (_, state) in enumerate(states, 1) if not state.reachable]
    if not up:
        return EngineState(reachable=False, error="No server answers: " + "; ".join(down), timestamp=timestamp)

    def total(values: list[int | None]) -> int | None:
        known = [value for value in values if value is not None]
        return sum(known) if known else None

    # (usage, engines): a server with two data-parallel engines weighs twice.
    kv_pairs = [(state.kv_cache_usage, max(1, state.engines)) for state in up if state.kv_cache_usage is not None]
    kv = sum(usage * weight for usage, weight in kv_pairs) / sum(weight for _, weight in kv_pairs) if kv_pairs else None
    errors = [f"{len(down)} of {len(states)} servers unreachable ({'; '.join(down)})"] if down else []
    errors += [state.error for state in up if state.error]
    return EngineState(
        reachable=True,
        running=total([state.running for state in up]),
        waiting=total([state.waiting for state in up]),
        kv_cache_usage=kv,
        engines=sum(state.engines for state in up),
        error="; ".join(errors),
        timestamp=timestamp,
        servers=tuple(states),
    )


class EnginePoller:
    """The latest EngineState, fetched at most once per interval for all viewers together.

    `latest()` returns the cached state at once and, when it is older than `interval_s`,
    starts one background refresh. Only the very first call waits for a fetch (bounded by
    `timeout_s`), so the first paint shows real numbers. The httpx client belongs to the
    event loop that first used it (Gradio's server loop); `aclose()` releases it.
    """

    def __init__(
        self,
        server_url: str,
        *,
        metrics_urls: Sequence[str] = (),
        api_key: str | None = None,
        interval_s: float = 1.0,
        timeout_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.server_url = server_url
        self.metrics_urls = tuple(metrics_urls) or (server_url,)
        """Whose /metrics to read: the server's own, or each server's behind a fleet router."""
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.fetches = 0
        """`/metrics` requests made so far: grows with time, not with viewers."""
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._clock = clock
        self._state: EngineState | None = None
        self._fetched_at = -math.inf
        self._refresh: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None

    async def latest(self) -> EngineState:
        loop = asyncio.get_running_loop()
        refresh = self._refresh
        idle = refresh is None or refresh.done() or refresh.get_loop() is not loop
        due = self._clock() - self._fetched_at >= self.interval_s
        if idle and (due or self._state is None):
            # Claim the slot before any await so that concurrent viewers share this fetch.
            self._fetched_at = self._clock()
            refresh = self._refresh = loop.create_task(self._fetch())
        if self._state is None and refresh is not None:
            await asyncio.shield(refresh)
        assert self._state is not None, "the first fetch always stores a state"
        return self._state

    async def _fetch(self) -> None:
        self.fetches += 1
        try:
            state = await self._read_all()
        except Exception as error:
            # Nobody awaits a background refresh: log its failure and show it on the panel.
            logging.getLogger(__name__).exception("Reading engine metrics failed")
            state = EngineState(
                reachable=False,
                error=f"Reading engine metrics failed ({type(error).__name__}); the page's log has the details",
                timestamp=time.time(),
            )
        self._state = state

    async def _read_all(self) -> EngineState:
        client = self._client_for_this_loop()
        if len(self.metrics_urls) == 1:
            return await fetch_engine_state(client, self.metrics_urls[0], timeout_s=self.timeout_s)
        states = await asyncio.gather(
            *(fetch_engine_state(client, url, timeout_s=self.timeout_s) for url in self.metrics_urls)
        )
        return merge_engine_states(list(zip(self.metrics_urls, states, strict=True)), timestamp=time.time())

    def _client_for_this_loop(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            # A client's pooled connections are tied to the loop that opened them.
            self._client = httpx.AsyncClient(headers=self._headers, timeout=self.timeout_s)
            self._client_loop = loop
        return self._client

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
