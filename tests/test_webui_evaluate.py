"""The Evaluate view end to end: the page on real vLLM servers, driven by gradio_client.

Expected measures are worked out here from the definitions (graded DCG with log2 discount,
reciprocal rank, recall) over the server's own /v1/rerank ranking of the same documents,
never with the page's code.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from gradio_client import handle_file

from server.contract import DEFAULT_INSTRUCTION
from tests.support.page import LaunchedPage, launched
from tests.support.server_process import RunningServer
from webui.app import create_demo
from webui.settings import Settings

pytestmark = pytest.mark.timeout(900)

DOCUMENTS = [
    "Paris is the capital of France.",
    "Beijing is the capital of China.",
    "The Great Wall of China stretches across the north of the country.",
    "Tokyo is the capital of Japan.",
    "Shanghai is the largest city in China.",
    "Lyon is a city in France known for its food.",
]
JUDGMENTS = {
    "what is the capital of China?": {2: 2, 5: 1},  # doc_id (1-based position): grade
    "which cities are in France?": {1: 1, 6: 2},
}


def dcg(gains: Sequence[int]) -> float:
    return sum(gain / math.log2(rank + 1) for rank, gain in enumerate(gains[:10], start=1))


def by_hand(grades: Mapping[int, int], order: Sequence[int], k: int) -> dict[str, float]:
    """nDCG@10, MRR@10 and Recall@k of `order` (1-based doc ids, best first), from the definitions."""
    gains = [grades.get(doc, 0) for doc in order]
    ideal = dcg(sorted(grades.values(), reverse=True))
    first = next((rank for rank, gain in enumerate(gains[:10], start=1) if gain > 0), None)
    relevant = sum(1 for grade in grades.values() if grade > 0)
    return {
        "nDCG@10": dcg(gains) / ideal,
        "MRR@10": 1 / first if first else 0.0,
        f"Recall@{k}": sum(1 for gain in gains[:k] if gain > 0) / relevant,
    }


def server_order(server_url: str, query: str, instruction: str | None) -> list[int]:
    """1-based doc ids best first, from the server's own /v1/rerank."""
    model = httpx.get(f"{server_url}/v1/models", timeout=30).json()["data"][0]["id"]
    payload: dict[str, Any] = {"model": model, "query": query, "documents": DOCUMENTS}
    if instruction is not None:
        payload["instruction"] = instruction
    answer = httpx.post(f"{server_url}/v1/rerank", json=payload, timeout=300)
    answer.raise_for_status()
    return [int(item["index"]) + 1 for item in answer.json()["results"]]


class Page(LaunchedPage):
    def evaluate(self, judgments: Path | None, *, second: str = "", k: int = 3) -> Any:
        file = handle_file(str(judgments)) if judgments else None
        return self.client.predict(
            file, DEFAULT_INSTRUCTION, second, "\n".join(DOCUMENTS), "One per line", None, None, k, api_name="/evaluate"
        )


def settings_for(server: RunningServer) -> Settings:
    return Settings(server_url=server.url, max_docs=20, max_upload_bytes=200_000, timeout=60.0)


@pytest.fixture(scope="module")
def minilm_page(minilm_server: RunningServer) -> Iterator[Page]:
    with launched(settings_for(minilm_server), Page) as page:
        yield page


@pytest.fixture(scope="module")
def qwen3_page(tiny_qwen3_server: RunningServer) -> Iterator[Page]:
    with launched(settings_for(tiny_qwen3_server), Page) as page:
        yield page


def judgment_file(tmp_path: Path, rows: Sequence[Sequence[object]], name: str = "judgments.csv") -> Path:
    path = tmp_path / name
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["query", "doc_id", "grade"])
        writer.writerows(rows)
    return path


def judged_rows() -> list[tuple[str, int, int]]:
    return [(query, doc, grade) for query, grades in JUDGMENTS.items() for doc, grade in grades.items()]


def table_values(result: Any) -> dict[tuple[str, str], list[Any]]:
    return {(row[0], row[1]): row[2:] for row in result[1]["data"]}


def test_uploaded_judgments_give_each_querys_measures_against_the_input_order(
    minilm_page: Page, tmp_path: Path
) -> None:
    result = minilm_page.evaluate(judgment_file(tmp_path, judged_rows()), k=3)
    values = table_values(result)
    input_order = list(range(1, len(DOCUMENTS) + 1))
    means: dict[str, list[float]] = {}
    for query, grades in JUDGMENTS.items():
        reranked = by_hand(grades, server_order(minilm_page.settings.server_url, query, None), 3)
        before = by_hand(grades, input_order, 3)
        for name in ("nDCG@10", "MRR@10", "Recall@3"):
            base, after, delta, *_ = values[(query, name)]
            assert base == pytest.approx(before[name], abs=1e-4)
            assert after == pytest.approx(reranked[name], abs=1e-4)
            assert delta == pytest.approx(reranked[name] - before[name], abs=2e-4)
            means.setdefault(name, []).append(reranked[name])
    for name, per_query in means.items():
        assert values[("All queries (mean)", name)][1] == pytest.approx(sum(per_query) / len(per_query), abs=1e-4)
    # The real model puts Beijing first for the capital of China: a perfect reciprocal rank.
    assert values[("what is the capital of China?", "MRR@10")][1] == 1.0
    assert result[0].startswith("Evaluated **2** judged queries")
    # The download holds the same rows.
    with open(result[2]["value"], encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(result[1]["data"]) and rows[0]["Query"] == "what is the capital of China?"


def test_a_second_instruction_is_measured_beside_the_first(qwen3_page: Page, tmp_path: Path) -> None:
    second = "Judge whether the document names a capital city"
    result = qwen3_page.evaluate(judgment_file(tmp_path, judged_rows()), second=second, k=3)
    values = table_values(result)
    server_url = qwen3_page.settings.server_url
    for query, grades in JUDGMENTS.items():
        a = by_hand(grades, server_order(server_url, query, DEFAULT_INSTRUCTION), 3)
        b = by_hand(grades, server_order(server_url, query, second), 3)
        base = by_hand(grades, list(range(1, len(DOCUMENTS) + 1)), 3)
        _, after_a, _, after_b, delta_b = values[(query, "nDCG@10")]
        assert after_a == pytest.approx(a["nDCG@10"], abs=1e-4)
        assert after_b == pytest.approx(b["nDCG@10"], abs=1e-4)
        assert delta_b == pytest.approx(b["nDCG@10"] - base["nDCG@10"], abs=2e-4)
    assert "with instruction B" in result[0]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([("capital", 2, "high")], "Row 2: the grade 'high' is not a number"),
        # The status is Markdown: the underscore of doc_id comes escaped.
        ([("capital", 2, 1), ("capital", 99, 1)], r"Row 3: no document has doc\_id '99'; ids are positions 1 to 6"),
        ([("capital", 2, 1), ("france", 1, 0)], "Row 3: the query 'france' has no relevant document"),
    ],
)
def test_bad_judgments_get_one_line_naming_the_row(
    minilm_page: Page, tmp_path: Path, rows: list[tuple[Any, ...]], message: str
) -> None:
    summary, table, download = minilm_page.evaluate(judgment_file(tmp_path, rows))
    assert summary.startswith("⚠️ ") and message in summary and "\n" not in summary
    assert table["data"] == [] and download["visible"] is False


def test_missing_columns_and_no_file_are_one_line(minilm_page: Page, tmp_path: Path) -> None:
    path = tmp_path / "judgments.csv"
    path.write_text("question,doc,score\nq,1,1\n", encoding="utf-8")
    assert "needs the columns query, grade, and document" in minilm_page.evaluate(path)[0]
    assert "Upload a judgment file" in minilm_page.evaluate(None)[0]


def test_ticked_documents_are_measured_against_the_input_order(minilm_page: Page) -> None:
    query = "what is the capital of China?"
    ticks, status = minilm_page.client.predict(
        query, DEFAULT_INSTRUCTION, "\n".join(DOCUMENTS), "One per line", None, None, api_name="/rank_for_ticking"
    )
    order = server_order(minilm_page.settings.server_url, query, None)
    # The choices are the ranked documents, best first, each valued by its 0-based position.
    assert [value for _, value in ticks["choices"]] == [doc - 1 for doc in order]
    assert "tick the relevant ones" in status
    # Tick Beijing (id 2) and Shanghai (id 5) as relevant.
    summary, table, _ = minilm_page.client.predict([1, 4], 3, api_name="/measure_ticks")
    values = {(row[0], row[1]): row[2:] for row in table["data"]}
    grades = {2: 1, 5: 1}
    expected = by_hand(grades, order, 3)
    base = by_hand(grades, list(range(1, len(DOCUMENTS) + 1)), 3)
    for name in ("nDCG@10", "MRR@10", "Recall@3"):
        assert values[(query, name)][:2] == pytest.approx([base[name], expected[name]], abs=1e-4)
    assert summary.startswith("Evaluated **1** judged query")


def test_evaluate_jobs_share_the_rerank_queue_slots() -> None:
    """Evaluating ranks documents as Rerank does, so it counts against the same limit."""
    demo = create_demo(Settings(concurrency=3))
    slots = {fn.api_name: (fn.concurrency_id, fn.concurrency_limit) for fn in demo.fns.values()}
    assert slots["evaluate"] == slots["rank_for_ticking"] == slots["rerank"] == ("rerank", 3)
