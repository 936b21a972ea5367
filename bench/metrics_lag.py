"""How far vLLM's /metrics running/waiting gauges trail the requests really at the server.

    python -m server serve --profile cpu --port 8000 &
    python -m bench.metrics_lag --server-url http://127.0.0.1:8000

The page's engine panel shows `vllm:num_requests_running` and `vllm:num_requests_waiting`.
This script is the truth beside them: it sends rerank requests itself, so it knows at every
moment how many are in flight (sent, not yet answered), and samples /metrics every
`--sample-s` while they run. Each round sends `--requests` requests at once, of
`--documents` documents each, then waits for the gauges to settle back to 0.

Reported per round: how long after the first request the gauges first showed any work, how
long after the last answer they went back to 0, and the share of samples during the work in
which the gauges said idle (running + waiting = 0) although requests were in flight.
Results go to bench/results/metrics-lag-<label>.json and .md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from webui.engine import engine_state_from_metrics

RESULTS = Path(__file__).with_name("results")
WORDS = ("river", "stone", "market", "window", "garden", "engine", "letter", "winter", "capital", "China")


@dataclass(frozen=True)
class LagConfig:
    server_url: str = "http://127.0.0.1:8000"
    """The vLLM server, started through `python -m server serve`."""
    requests: int = 4
    """Requests sent at once per round: more than one, so some must wait."""
    documents: int = 400
    """Documents per request: enough for a request to take seconds on a CPU."""
    words: int = 60
    """Words per document."""
    rounds: int = 3
    """Rounds measured; the first pays for warm-up as a first analyst would."""
    sample_s: float = 0.1
    """/metrics sampling interval: well under the ~2 s the panel should follow within."""
    settle_s: float = 60.0
    """How long to wait, after the last answer, for the gauges to come back to 0."""
    label: str = "cpu"
    """Names the result files: the machine and profile measured."""


@dataclass
class Round:
    first_seen_s: float | None = None
    """From the first request sent to the first sample with running + waiting > 0."""
    cleared_s: float | None = None
    """From the last answer to the first sample with running + waiting = 0."""
    busy_s: float = 0.0
    """From the first request sent to the last answer."""
    samples_busy: int = 0
    samples_said_idle: int = 0
    """Samples taken while requests were in flight in which the gauges said 0 and 0."""
    peak_running: int = 0
    peak_waiting: int = 0
    timeline: list[tuple[float, int, int, int]] = field(default_factory=list)
    """(seconds since the first request, requests in flight, running, waiting)."""


def documents(count: int, words: int, seed: int) -> list[str]:
    return [" ".join(WORDS[(seed + i * 7 + j) % len(WORDS)] for j in range(words)) for i in range(count)]


async def measure_round(client: httpx.AsyncClient, model: str, config: LagConfig, seed: int) -> Round:
    result = Round()
    in_flight = 0
    started = time.monotonic()
    last_answer: float | None = None

    async def one(index: int) -> None:
        nonlocal in_flight, last_answer
        in_flight += 1
        try:
            texts = documents(config.documents, config.words, seed + index)
            body = {"model": model, "query": "capital of China", "documents": texts}
            answer = await client.post("/v1/rerank", json=body, timeout=600)
            answer.raise_for_status()
        finally:
            in_flight -= 1
            last_answer = time.monotonic()

    jobs = [asyncio.create_task(one(index)) for index in range(config.requests)]
    await asyncio.sleep(0)  # every request is sent before the first sample
    while True:
        now = time.monotonic()
        state = engine_state_from_metrics((await client.get("/metrics", timeout=10)).text)
        running, waiting = state.running or 0, state.waiting or 0
        at = now - started
        result.timeline.append((round(at, 2), in_flight, running, waiting))
        result.peak_running, result.peak_waiting = max(result.peak_running, running), max(result.peak_waiting, waiting)
        if in_flight:
            result.samples_busy += 1
            result.samples_said_idle += running + waiting == 0
        if result.first_seen_s is None and running + waiting > 0:
            result.first_seen_s = at
        if not in_flight and last_answer is not None:
            if running + waiting == 0:
                result.cleared_s = max(0.0, now - last_answer)
                break
            if now - last_answer > config.settle_s:
                break
        await asyncio.sleep(config.sample_s)
    await asyncio.gather(*jobs)
    result.busy_s = (last_answer or started) - started
    return result


async def run(config: LagConfig) -> list[Round]:
    async with httpx.AsyncClient(base_url=config.server_url) as client:
        model = (await client.get("/v1/models", timeout=30)).json()["data"][0]["id"]
        return [await measure_round(client, model, config, seed) for seed in range(config.rounds)]


def report(config: LagConfig, rounds: list[Round]) -> str:
    def seconds(value: float | None) -> str:
        return "never" if value is None else f"{value:.1f}"

    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    lines = [
        f"# vLLM /metrics lag ({config.label})",
        "",
        f"{platform.machine()}, {os.cpu_count()} cores, load average {load} at the end; "
        f"{config.requests} requests at once of "
        f"{config.documents} documents x {config.words} words, /metrics sampled every {config.sample_s:g} s.",
        "",
        "`running` counts the engine's own requests after each step: a pooling request finishes in the step "
        "that runs it, so it is 0 between steps; `waiting` counts engine requests (one per document or "
        "query-document pair), not the page's jobs.",
        "",
        "| round | busy s | first shown after s | back to 0 after last answer s | samples busy "
        "| said idle while busy | peak running | peak waiting |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for number, item in enumerate(rounds, start=1):
        idle = f"{item.samples_said_idle} ({100 * item.samples_said_idle / max(item.samples_busy, 1):.0f}%)"
        lines.append(
            f"| {number} | {item.busy_s:.1f} | {seconds(item.first_seen_s)} | {seconds(item.cleared_s)} | "
            f"{item.samples_busy} | {idle} | {item.peak_running} | {item.peak_waiting} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    defaults = LagConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, value in asdict(defaults).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    config = LagConfig(**vars(parser.parse_args()))
    rounds = asyncio.run(run(config))
    text = report(config, rounds)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"metrics-lag-{config.label}"
    stem.with_suffix(".md").write_text(text)
    record = {"config": asdict(config), "machine": platform.uname()._asdict(), "rounds": [asdict(r) for r in rounds]}
    stem.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
