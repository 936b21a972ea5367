"""What the page adds to a rerank on a CPU host, beside vLLM alone and sentence-transformers.

    .venv/bin/pip install -r bench/requirements.txt         # the peer, sentence-transformers
    .venv/bin/python -m bench.cpu_overhead                  # about 5 min on 2 cores
    .venv/bin/python -m bench.cpu_overhead --repeats 40 --out-dir /tmp/overhead

Starts the `cpu` profile as a user does (`python -m server serve --profile cpu --port P`,
waited for as `python -m server wait` waits) and the page (`python -m webui --server-url URL`), then
times one request of 20 documents of 200 words (seeded, new ones for every call, so that the
page keeps nothing between calls) in `--repeats` rounds after
`--warmup` untimed ones, each round taking every path in turn so that drifting background
load hits all alike: through the page with gradio_client (/rerank), through the page with
Gradio's HTTP protocol as the browser speaks it, straight to vLLM's /v1/rerank (httpx), and
the page's bare round trip (an empty query, refused before any server call). vLLM's own
/metrics counts the server calls each page request made. Then server
and page are stopped and sentence-transformers embeds the same texts on the same cores in
bf16 and fp32. Prints a markdown table and writes cpu-overhead.md and cpu-overhead.json.

Other jobs on the same cores move every number: each timed phase first waits (up to 10 min)
for the 1-min load average to fall to --max-load, and the loads are recorded with the results.

This file is the command line; the work is in overhead_config.py (what is measured),
overhead_serving.py (the server, the page and the timed paths), sentence_transformers_peer.py,
overhead_report.py (record and table), with page_http.py, server_process.py, server_metrics.py,
machine.py and stats.py shared with the other benchmarks.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import sys
from pathlib import Path

from bench.overhead_config import OverheadConfig
from bench.overhead_report import build_record, markdown
from bench.overhead_serving import BenchError, measure_serving
from bench.page_http import PageCallError
from bench.sentence_transformers_peer import measure_sentence_transformers
from bench.texts import WORDS


def make_documents(config: OverheadConfig, round_index: int = 0) -> list[str]:
    """The request of one round: `docs` documents of `words` words, its own seed per round."""
    rng = random.Random(config.seed * 100_003 + round_index)
    return [" ".join(rng.choice(WORDS) for _ in range(config.words)) for _ in range(config.docs)]


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
    if importlib.util.find_spec("sentence_transformers") is None:  # found now, not after 5 minutes
        print("error: the peer needs sentence-transformers: pip install -r bench/requirements.txt", file=sys.stderr)
        return 1
    documents = make_documents(config)
    try:
        # Timed calls get sets 1, 2, ..., warm-up calls -1, -2, ...; set 0 is the checked one,
        # which the peers score too.
        serving = measure_serving(config, lambda index: make_documents(config, index + (index >= 0)), documents)
        # The server and the page are stopped by now: these get the cores alone.
        peers = {name: measure_sentence_transformers(config, documents, name) for name in ("bf16", "fp32")}
    except (BenchError, PageCallError) as error:
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
