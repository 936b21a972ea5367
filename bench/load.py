"""Closed-loop load on a running server's /v1/rerank: N clients, each sends its next request
when the previous answer arrives.

    result = asyncio.run(run_load(url, model, jobs, clients=8))
    result.pairs_per_s, result.latency_ms(50)

Every answer is checked (one result per document, finite scores in [0, 1]); a broken
server fails the run instead of producing a fast, meaningless figure.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import httpx

from bench.stats import percentile
from bench.texts import RerankJob


class BadAnswerError(RuntimeError):
    """The server answered, but not with one score per document."""


@dataclass(frozen=True)
class Answer:
    latency_s: float
    pairs: int
    prompt_tokens: int
    scores: tuple[float, ...]
    """In document order (vLLM sorts results by score; `index` puts them back)."""


@dataclass(frozen=True)
class LoadResult:
    wall_s: float
    answers: tuple[Answer, ...]

    @property
    def pairs(self) -> int:
        return sum(a.pairs for a in self.answers)

    @property
    def prompt_tokens(self) -> int:
        return sum(a.prompt_tokens for a in self.answers)

    @property
    def pairs_per_s(self) -> float:
        return self.pairs / self.wall_s

    def latency_ms(self, q: int) -> float:
        latency_s = percentile([a.latency_s for a in self.answers], q)
        if latency_s is None:
            raise ValueError("no answers to take a latency from")
        return latency_s * 1000


async def rerank(client: httpx.AsyncClient, url: str, model: str, job: RerankJob) -> Answer:
    body = {"model": model, "query": job.query, "documents": list(job.documents)}
    start = time.perf_counter()
    response = await client.post(f"{url}/v1/rerank", json=body)
    latency = time.perf_counter() - start
    if response.status_code != 200:
        raise BadAnswerError(f"/v1/rerank answered {response.status_code}: {response.text[:300]}")
    data = response.json()
    scores = [math.nan] * len(job.documents)
    for result in data["results"]:
        scores[result["index"]] = float(result["relevance_score"])
    if any(not (0.0 <= s <= 1.0) for s in scores):  # NaN fails both comparisons
        raise BadAnswerError(f"missing or out-of-range scores: {scores[:5]}...")
    return Answer(latency, len(job.documents), int(data["usage"]["prompt_tokens"]), tuple(scores))


async def run_load(url: str, model: str, jobs: Sequence[RerankJob], clients: int, timeout_s: float = 600) -> LoadResult:
    queue: asyncio.Queue[RerankJob] = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)
    answers: list[Answer] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=timeout_s, limits=limits) as client:

        async def worker() -> None:
            while not queue.empty():
                answers.append(await rerank(client, url, model, queue.get_nowait()))

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        wall = time.perf_counter() - start
    return LoadResult(wall_s=wall, answers=tuple(answers))
