"""An analyst's session through the page: 40 long documents, 10 queries, on the `cpu` profile.

    .venv/bin/python -m bench.session                      # about 10 min on 2 loaded cores
    .venv/bin/python -m bench.session --server-url http://127.0.0.1:8000 --out /tmp/session

The documents are the pydoc plain text of the 40 standard-library modules in MODULES, each
cut to its first --doc-bytes bytes at a line end: any machine with this Python makes the
same set (the Python version is recorded). They are uploaded as a JSONL file, in MODULES
order (the first-stage order), and ranked for the 10 QUERIES one after another.

Starts the server as a user does (`python -m server serve --profile cpu`), a recording proxy
in front of it, and the page (`python -m webui --server-url PROXY`), then measures:
  - first query: the page's time for the first query (documents counted and split);
  - repeated queries: the median of the other nine (same documents, other queries);
  - server time: the sum of the page's scoring calls as timed at the server's door (the
    proxy): /v1/embeddings on the `cpu` profile, whose MiniLM is an embedding model (the page
    keeps passages' vectors, webui/embedded.py), /v1/rerank for a cross-encoder; the page's
    own work = page time / server time - 1 (splitting, counting, batching, the cosine, the
    table, Gradio), meaningful for the first query, which sends every passage;
  - the same passages by /v1/rerank: right after each query, the server's own time to rerank
    the passages the page sent in its first query, in the same batches, with that query:
    what a query costs without the page;
  - before: the same queries through main's rank_documents before this change (commit
    BEFORE_COMMIT: send all, on refusal count one text at a time and split, one call), run
    in-process against the same proxy, so without Gradio's own time;
  - fairness: a small rerank (2 short documents) alone, and again while another analyst's
    40-document job runs (the next 4,000 bytes of the same modules, new to the page), each
    through its own gradio_client session.
Load averages are recorded beside every phase: the machine is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import importlib.util
import json
import os
import platform
import pydoc
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
from gradio_client import Client, handle_file
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bench.overhead_serving import QUIET_ENV
from bench.server_process import ChildProcess, ServerProcess, free_port, serving

REPO = Path(__file__).resolve().parent.parent
BEFORE_COMMIT = "23088b3"
"""main before this change: the page's rank_documents sent everything in one call."""

MODULES = (
    *("json", "csv", "textwrap", "string", "heapq", "fractions", "statistics", "random", "shutil", "tempfile"),
    *("argparse", "logging", "collections", "functools", "itertools", "operator", "contextlib", "dataclasses"),
    *("enum", "typing", "abc", "copy", "difflib", "hashlib", "hmac", "secrets", "base64", "zipfile", "tarfile"),
    *("gzip", "sqlite3", "urllib.parse", "http.client", "socket", "selectors", "threading", "queue", "calendar"),
    *("datetime", "decimal"),
)
QUERIES = (
    "how do I parse a JSON string into Python objects?",
    "read the rows of a CSV file",
    "pick a random element from a list",
    "copy a whole directory tree",
    "create a temporary file that is deleted when closed",
    "compute the median of some numbers",
    "parse command-line options and arguments",
    "log a warning message to a file",
    "show the differences between two lists of lines",
    "compress data with gzip",
)
SMALL_JOB = ("The json module parses JSON text.", "Tarfile reads and writes tar archives.")
"""Another analyst's small rerank: two short documents, as in the issue's measurement."""


@dataclass(frozen=True)
class SessionConfig:
    server_url: str | None = None
    """A running `cpu` server to use; None starts one (and stops it at the end)."""
    doc_bytes: int = 4000
    """Each document's length: ~1,500 MiniLM tokens, six windows of 256; 40 of them keep a
    query near 20 s on 2 loaded cores, so the whole session stays around ten minutes."""
    batch_tokens: int = 4096
    """The page's --batch-tokens (its default)."""
    before_queries: int = 2
    """Queries timed through the code before this change (each costs a full query)."""
    small_repeats: int = 5
    """Small reranks timed alone, and again beside the big job."""
    out: Path = REPO / "bench" / "results" / "session-cpu"
    """Writes OUT.json and OUT.md."""
    log_dir: Path = REPO / "bench" / "logs"


# --- documents -----------------------------------------------------------------------------------


def stdlib_documents(doc_bytes: int, skip_bytes: int = 0) -> list[str]:
    """`doc_bytes` bytes of each module's pydoc text after its first `skip_bytes`, cut at a line end."""
    documents = []
    for name in MODULES:
        text = pydoc.render_doc(importlib.import_module(name), renderer=pydoc.plaintext)  # type: ignore[attr-defined]
        head = text.encode("utf-8")[skip_bytes : skip_bytes + doc_bytes].decode("utf-8", errors="ignore")
        documents.append(head[: head.rfind("\n")].strip() if "\n" in head else head.strip())
    return documents


# --- a proxy that times the server's answers --------------------------------------------------------


SCORING_PATHS = ("/v1/rerank", "/v1/embeddings")
"""The page scores pairs (/v1/rerank) or, for an embedding model, asks for vectors (/v1/embeddings)."""


@dataclass
class Call:
    path: str
    started: float
    """time.perf_counter() when the proxy sent it on."""
    seconds: float
    texts: list[str]
    """What a scoring call scored: a rerank's documents, an embedding call's inputs."""
    status: int


@dataclass
class TimingProxy:
    """Forwards everything to the server; records each call's path and how long the server took."""

    upstream: str
    calls: list[Call] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    client: httpx.AsyncClient | None = None
    """One client for every call, made in the proxy's own loop: a client per call would add
    its set-up (an SSL context, even for http) to the page's time on a loaded machine."""

    async def forward(self, request: Request) -> Response:
        body = await request.body()
        texts: list[str] = []
        if request.url.path in SCORING_PATHS:
            sent = json.loads(body)
            texts = list(sent["documents"] if request.url.path == "/v1/rerank" else sent["input"])
        if self.client is None:
            self.client = httpx.AsyncClient(base_url=self.upstream, timeout=900)
        started = time.perf_counter()
        answer = await self.client.request(
            request.method, request.url.path, content=body, headers={"content-type": "application/json"}
        )
        seconds = time.perf_counter() - started
        with self.lock:
            self.calls.append(Call(request.url.path, started, seconds, texts, answer.status_code))
        return Response(answer.content, answer.status_code, media_type=answer.headers.get("content-type"))

    def take(self) -> list[Call]:
        with self.lock:
            calls, self.calls = self.calls, []
        return calls


def proxy_app(proxy: TimingProxy) -> Starlette:
    return Starlette(routes=[Route("/{path:path}", proxy.forward, methods=["GET", "POST"])])


# --- processes started as a user starts them -------------------------------------------------------


@contextlib.contextmanager
def cpu_server(config: SessionConfig) -> Iterator[str]:
    if config.server_url:
        yield config.server_url
        return
    port = free_port()
    server = ServerProcess(["--profile", "cpu"], port, config.log_dir / f"session-server-{port}.log", env=QUIET_ENV)
    with server:
        yield server.url


@contextlib.contextmanager
def page(server_url: str, config: SessionConfig) -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    argv = [sys.executable, "-m", "webui", "--server-url", server_url, "--port", str(port)]
    argv += ["--profile-label", "cpu", "--batch-tokens", str(config.batch_tokens)]
    with ChildProcess(argv, url, config.log_dir / f"session-page-{port}.log", health_path="/config", env=QUIET_ENV):
        yield url


# --- the measurements ----------------------------------------------------------------------------


def load() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


@dataclass
class QueryRecord:
    query: str
    page_s: float
    server_scoring_s: float
    """How long the server was busy with the page's scoring calls (/v1/rerank or /v1/embeddings)
    as timed at its door: the union of the calls' spans, since a job has two in flight."""
    scoring_calls: int
    tokenize_calls: int
    texts_scored: int
    """Passages (and, for an embedding model, the query) the server scored for this query."""
    load_1m: float
    direct_rerank_s: float | None = None
    """The server's own /v1/rerank of the same passages with this query (same batches), timed
    right after: what the query costs without the page."""

    @property
    def page_overhead(self) -> float:
        return self.page_s / self.server_scoring_s - 1 if self.server_scoring_s else float("nan")


def ranked_query(client: Client, jsonl: Path, query: str, proxy: TimingProxy) -> tuple[QueryRecord, list[Call]]:
    proxy.take()
    started_at = time.perf_counter()
    result = client.predict(query, "", "", "One per line", handle_file(str(jsonl)), "text", 10, api_name="/rerank")
    seconds = time.perf_counter() - started_at
    status = str(result[1])
    if not status.startswith("Ranked"):
        raise RuntimeError(f"the page did not rank: {status}")
    calls = proxy.take()
    return query_record(query, seconds, calls), calls


def query_record(query: str, seconds: float, calls: list[Call]) -> QueryRecord:
    """One query's figures from its time and the server calls the proxy saw meanwhile."""
    scoring = [call for call in calls if call.path in SCORING_PATHS]
    return QueryRecord(
        query=query,
        page_s=round(seconds, 3),
        server_scoring_s=round(busy_s([(call.started, call.started + call.seconds) for call in scoring]), 3),
        scoring_calls=len(scoring),
        tokenize_calls=sum(call.path == "/tokenize" for call in calls),
        texts_scored=sum(len(call.texts) for call in scoring if call.status == 200),
        load_1m=load()[0],
    )


def busy_s(spans: list[tuple[float, float]]) -> float:
    """Length of the union of (start, end) spans: time with at least one call in flight."""
    total, reached = 0.0, float("-inf")
    for start, end in sorted(spans):
        if end > reached:
            total += end - max(start, reached)
            reached = end
    return total


def direct_rerank_s(server_url: str, query: str, batches: list[list[str]]) -> float:
    """The server's own time to rerank `batches` for `query`, one call after another, each
    timed from request to answer as the proxy times the page's calls."""
    with httpx.Client(base_url=server_url, timeout=900) as client:
        model = client.get("/v1/models").json()["data"][0]["id"]
        total = 0.0
        for batch in batches:
            started_at = time.perf_counter()
            client.post("/v1/rerank", json={"model": model, "query": query, "documents": batch}).raise_for_status()
            total += time.perf_counter() - started_at
    return round(total, 3)


def passage_batches(calls: list[Call], query: str) -> list[list[str]]:
    """The passages the page sent in its first query, in its batches (the query's own vector left out)."""
    return [call.texts for call in calls if call.path in SCORING_PATHS and call.texts != [query]]


def old_rank_documents() -> ModuleType | None:
    """main's webui/passages.py before this change, loaded from git; None without git history."""
    done = subprocess.run(
        ["git", "show", f"{BEFORE_COMMIT}:webui/passages.py"], cwd=REPO, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        return None
    path = Path(tempfile.mkdtemp(prefix="session-before-")) / "before_passages.py"
    path.write_text(done.stdout, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("before_passages", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


def before_query(
    module: ModuleType, proxy_url: str, documents: list[str], query: str, proxy: TimingProxy
) -> QueryRecord:
    """One query as main's page ran it (its defaults: 120 s timeout, batches of 1,000)."""
    from webui.client import RerankClient

    async def run() -> None:
        client = RerankClient(proxy_url, timeout=120.0, max_connections=4)
        try:
            model = await client.model_info()
            await module.rank_documents(client, model, query, documents, instruction=None, batch_size=1000)
        finally:
            await client.aclose()

    proxy.take()
    started_at = time.perf_counter()
    asyncio.run(run())
    seconds = time.perf_counter() - started_at
    return query_record(query, seconds, proxy.take())


def small_rerank(client: Client) -> float:
    started_at = time.perf_counter()
    result = client.predict("parse JSON", "", "\n".join(SMALL_JOB), "One per line", None, None, 10, api_name="/rerank")
    if not str(result[1]).startswith("Ranked"):
        raise RuntimeError(f"the small rerank failed: {result[1]}")
    return time.perf_counter() - started_at


def fairness(page_url: str, jsonl: Path, proxy: TimingProxy, repeats: int) -> dict[str, Any]:
    """The small rerank alone, then while a 40-document job runs in another session."""
    small = Client(page_url, verbose=False)
    big = Client(page_url, verbose=False)
    try:
        small_rerank(small)  # warm: its query count is then cached like any repeat
        alone = [small_rerank(small) for _ in range(repeats)]
        load_alone = load()[0]
        beside: list[float] = []
        proxy.take()
        job = big.submit(QUERIES[0], "", "", "One per line", handle_file(str(jsonl)), "text", 10, api_name="/rerank")
        deadline = time.monotonic() + 300
        # Wait on the state meant: the big job's batches are reaching the server.
        while sum(call.path in SCORING_PATHS for call in proxy.calls) < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        while len(beside) < repeats and not job.done():
            beside.append(small_rerank(small))
        big_done = job.done()
        job.result(timeout=900)
        return {
            "small_alone_s": [round(value, 3) for value in alone],
            "small_beside_big_s": [round(value, 3) for value in beside],
            "small_alone_median_s": round(statistics.median(alone), 3),
            "small_beside_big_median_s": round(statistics.median(beside), 3) if beside else None,
            "ratio": round(statistics.median(beside) / statistics.median(alone), 2) if beside else None,
            "big_job_finished_before_the_small_ones": big_done,
            "load_1m": [load_alone, load()[0]],
        }
    finally:
        small.close()
        big.close()


def machine() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), "")
    return {
        "cpu_model": model or platform.processor(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
    }


def run_session(config: SessionConfig) -> dict[str, Any]:
    documents = stdlib_documents(config.doc_bytes)
    workdir = Path(tempfile.mkdtemp(prefix="session-bench-"))
    jsonl = workdir / "stdlib.jsonl"
    jsonl.write_text("".join(json.dumps({"text": text}) + "\n" for text in documents), encoding="utf-8")
    record: dict[str, Any] = {
        "machine": machine(),
        "load_start": load(),
        "documents": {"modules": list(MODULES), "doc_bytes": config.doc_bytes, "count": len(documents)},
        "queries": list(QUERIES),
        "batch_tokens": config.batch_tokens,
    }
    proxy = TimingProxy("")
    with cpu_server(config) as server_url:
        proxy.upstream = server_url
        with serving(proxy_app(proxy)) as proxy_url, page(proxy_url, config) as page_url:
            client = Client(page_url, verbose=False)
            try:
                queries: list[QueryRecord] = []
                batches: list[list[str]] = []
                for query in QUERIES:
                    found, calls = ranked_query(client, jsonl, query, proxy)
                    batches = batches or passage_batches(calls, query)
                    found.direct_rerank_s = direct_rerank_s(server_url, query, batches)
                    queries.append(found)
                    print(queries[-1], flush=True)  # a long run shows where it is
            finally:
                client.close()
            # The other analyst's job has documents of its own (the next bytes of each module's
            # text): documents the page has seen before would cost it almost nothing.
            other = workdir / "stdlib-next.jsonl"
            other.write_text(
                "".join(json.dumps({"text": t}) + "\n" for t in stdlib_documents(config.doc_bytes, config.doc_bytes)),
                encoding="utf-8",
            )
            record["fairness"] = fairness(page_url, other, proxy, config.small_repeats)
            module = old_rank_documents()
            before = (
                [before_query(module, proxy_url, documents, query, proxy) for query in QUERIES[: config.before_queries]]
                if module is not None
                else []
            )
    repeats = queries[1:]
    record["query_records"] = [asdict(query) | {"page_overhead": round(query.page_overhead, 3)} for query in queries]
    record["before_records"] = [asdict(query) for query in before]
    record["first_query_s"] = queries[0].page_s
    record["repeat_query_s"] = round(statistics.median(query.page_s for query in repeats), 3)
    record["first_page_overhead"] = round(queries[0].page_overhead, 3)
    record["repeat_server_scoring_s"] = round(statistics.median(query.server_scoring_s for query in repeats), 3)
    record["repeat_direct_rerank_s"] = round(statistics.median(q.direct_rerank_s or 0.0 for q in repeats), 3)
    record["repeat_vs_direct_rerank"] = round(record["repeat_query_s"] / record["repeat_direct_rerank_s"], 3)
    record["before_query_s"] = round(statistics.median(query.page_s for query in before), 3) if before else None
    record["repeat_speedup_vs_before"] = (
        round(record["before_query_s"] / record["repeat_query_s"], 2) if before else None
    )
    record["load_end"] = load()
    return record


def markdown(record: dict[str, Any]) -> str:
    fair = record["fairness"]
    lines = [
        f"# The analyst's session on the `cpu` profile ({record['machine']['cpu_model']}, "
        f"{record['machine']['cores_usable']} cores, Python {record['machine']['python']})",
        "",
        f"{record['documents']['count']} documents: the pydoc text of {', '.join(record['documents']['modules'])}, "
        f"each cut to its first {record['documents']['doc_bytes']:,} bytes; {len(record['queries'])} queries; "
        f"page --batch-tokens {record['batch_tokens']:,}. Load average (1/5/15 min) at start "
        f"{record['load_start']}, at end {record['load_end']}.",
        "",
        "| query | page s | server's scoring s (page's calls) | page's own work | the same passages by "
        "/v1/rerank s | scoring calls | /tokenize calls | texts scored | load 1m |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for index, query in enumerate(record["query_records"]):
        label = "first" if index == 0 else f"repeat {index}"
        lines.append(
            f"| {label} | {query['page_s']:.2f} | {query['server_scoring_s']:.2f} "
            f"| {100 * query['page_overhead']:+.1f}% | {query['direct_rerank_s']:.2f} "
            f"| {query['scoring_calls']} | {query['tokenize_calls']} | {query['texts_scored']} | {query['load_1m']} |"
        )
    for query in record["before_records"]:
        lines.append(
            f"| before ({BEFORE_COMMIT}) | {query['page_s']:.2f} | {query['server_scoring_s']:.2f} | "
            f"{100 * (query['page_s'] / query['server_scoring_s'] - 1):+.1f}% | - | {query['scoring_calls']} "
            f"| {query['tokenize_calls']} | {query['texts_scored']} | {query['load_1m']} |"
        )
    lines += [
        "",
        f"- first query **{record['first_query_s']:.2f} s**, of which the server's own scoring "
        f"{record['query_records'][0]['server_scoring_s']:.2f} s: the page's own work (counting, splitting, "
        f"batching, the cosine, the table, Gradio) **{100 * record['first_page_overhead']:+.1f}%**.",
        f"- repeated queries (median of {len(record['query_records']) - 1}) **{record['repeat_query_s']:.2f} s**: "
        f"{record['repeat_vs_direct_rerank']:.2f}x the {record['repeat_direct_rerank_s']:.2f} s the server itself "
        "takes to /v1/rerank the same passages (the page sends only the query's text; the passages' "
        "vectors are kept from the first query).",
    ]
    if record["before_query_s"] is not None:
        lines.append(
            f"- before this change ({BEFORE_COMMIT}, in-process, no Gradio): **{record['before_query_s']:.2f} s** "
            f"a query; a repeated query now is **{record['repeat_speedup_vs_before']:.2f}x** faster."
        )
    lines.append(
        f"- a small rerank (2 short documents): alone {fair['small_alone_median_s']:.2f} s (median of "
        f"{len(fair['small_alone_s'])}), beside a running 40-document job {fair['small_beside_big_median_s']} s "
        f"(median of {len(fair['small_beside_big_s'])}): **{fair['ratio']}x** its idle time."
    )
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> SessionConfig:
    defaults = SessionConfig()
    parser = argparse.ArgumentParser(prog="python -m bench.session", description=__doc__.splitlines()[0])
    parser.add_argument("--server-url", help="a running cpu-profile server (default: start one)")
    parser.add_argument("--doc-bytes", type=int, default=defaults.doc_bytes, help="bytes of each document")
    parser.add_argument("--batch-tokens", type=int, default=defaults.batch_tokens, help="the page's --batch-tokens")
    parser.add_argument("--before-queries", type=int, default=defaults.before_queries, help="queries on the old path")
    parser.add_argument("--small-repeats", type=int, default=defaults.small_repeats, help="small reranks timed")
    parser.add_argument("--out", type=Path, default=defaults.out, help="writes OUT.json and OUT.md")
    args = parser.parse_args(argv)
    return SessionConfig(
        server_url=args.server_url,
        doc_bytes=args.doc_bytes,
        batch_tokens=args.batch_tokens,
        before_queries=args.before_queries,
        small_repeats=args.small_repeats,
        out=args.out,
    )


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    record = run_session(config)
    report = markdown(record)
    print(report)
    config.out.parent.mkdir(parents=True, exist_ok=True)
    config.out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    config.out.with_suffix(".md").write_text(report, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
