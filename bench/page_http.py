"""The page called over Gradio's HTTP protocol, as its own JavaScript calls it.

    config = read_config(page_url)
    with QueuedCall(page_url, fn_index(config, "rerank")) as rerank:
        table, status, *_ = rerank(query, ...)          # join the queue, read the event stream
    tick_functions(config)                              # the timers an open tab runs
    run_predict_body(fn_index, [], session_hash)        # one tick, as the browser posts it

gradio_client checks its message queue every 50 ms, which a benchmark would count as the
page's time; `QueuedCall` reads the event stream as it arrives. Both page benchmarks use
this module (cpu_overhead.py for timed requests, load_page.py for the open tabs' ticks).
"""

from __future__ import annotations

import json
import uuid
from types import TracebackType
from typing import Any, Self

import httpx

RUN_PREDICT = "gradio_api/run/predict"
"""Where a browser posts an event that skips the queue (the timers' ticks)."""


class PageCallError(RuntimeError):
    """The page answered an event with a failure, or its stream ended without the result."""


def read_config(page_url: str) -> dict[str, Any]:
    """The page's Gradio config: its components and event dependencies."""
    config: dict[str, Any] = httpx.get(f"{page_url.rstrip('/')}/config", timeout=30).json()
    return config


def fn_index(config: dict[str, Any], api_name: str) -> int:
    return next(int(dep["id"]) for dep in config["dependencies"] if dep.get("api_name") == api_name)


def tick_functions(config: dict[str, Any]) -> list[tuple[int, float]]:
    """(fn_index, interval in s) of the timers an open tab runs."""
    timers = {c["id"]: float(c["props"]["value"]) for c in config["components"] if c.get("type") == "timer"}
    return [
        (int(dep["id"]), timers[target])
        for dep in config["dependencies"]
        for target, event in dep["targets"]
        if event == "tick" and target in timers
    ]


def run_predict_body(fn_index: int, data: list[Any], session_hash: str) -> dict[str, Any]:
    return {"data": data, "fn_index": fn_index, "session_hash": session_hash}


class QueuedCall:
    """One event of the page, called through Gradio's queue: join, then read the event stream
    until that event completes. One session, as one browser tab."""

    def __init__(self, page_url: str, fn_index: int, timeout_s: float = 300) -> None:
        self.http = httpx.Client(base_url=page_url, timeout=timeout_s)
        self.fn_index = fn_index
        self.session_hash = uuid.uuid4().hex[:11]

    def __call__(self, *data: Any) -> list[Any]:
        body = {
            **run_predict_body(self.fn_index, list(data), self.session_hash),
            "event_data": None,
            "trigger_id": None,
        }
        joined = self.http.post("gradio_api/queue/join", json=body)
        joined.raise_for_status()
        event_id = joined.json()["event_id"]
        with self.http.stream("GET", "gradio_api/queue/data", params={"session_hash": self.session_hash}) as events:
            for line in events.iter_lines():
                message = json.loads(line[5:]) if line.startswith("data:") else {}
                if message.get("event_id") == event_id and message.get("msg") == "process_completed":
                    if not message.get("success"):
                        raise PageCallError(f"the page failed: {message.get('output')}")
                    return list(message["output"]["data"])
        raise PageCallError("the page's event stream ended before the result")

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
