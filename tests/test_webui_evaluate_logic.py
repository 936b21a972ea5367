"""The Evaluate view's pure logic: judgment files (webui/judgments.py) and the measures
(webui/metrics.py), the latter against values worked out by hand from the definitions."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from webui.documents import DocumentError
from webui.judgments import read_judgments
from webui.metrics import measure

DOCUMENTS = ["Beijing is the capital of China.", "Paris is in France.", "Tokyo is in Japan.", "Lyon is in France."]


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --- the measures, by hand ------------------------------------------------------------------------


def test_ndcg_mrr_and_recall_of_a_graded_ranking() -> None:
    # Positions 3 (grade 2) and 5 (grade 1) are ranked 4th and 6th; 7 is judged not relevant.
    values = measure({3: 2, 5: 1, 7: 0}, list(range(12)), k=5)
    dcg = 2 / math.log2(5) + 1 / math.log2(7)
    ideal = 2 / math.log2(2) + 1 / math.log2(3)
    assert values["nDCG@10"] == pytest.approx(dcg / ideal, abs=1e-9)  # 0.46279
    assert values["MRR@10"] == pytest.approx(1 / 4)
    assert values["Recall@5"] == pytest.approx(1 / 2)


def test_a_perfect_ranking_scores_one() -> None:
    assert measure({2: 3, 0: 1}, [2, 0, 1, 3], k=2) == pytest.approx({"nDCG@10": 1.0, "MRR@10": 1.0, "Recall@2": 1.0})


def test_the_cutoff_is_ten() -> None:
    at_ten = measure({0: 1}, [*range(1, 10), 0], k=10)
    assert at_ten["nDCG@10"] == pytest.approx(1 / math.log2(11)) and at_ten["MRR@10"] == pytest.approx(0.1)
    at_eleven = measure({0: 1}, [*range(1, 11), 0], k=10)
    assert at_eleven == {"nDCG@10": 0.0, "MRR@10": 0.0, "Recall@10": 0.0}


def test_the_order_given_is_the_order_measured_even_for_equal_ids() -> None:
    # trec_eval breaks score ties by document id; the order is passed as distinct scores,
    # so "10" ranked before "9" stays there.
    assert measure({10: 1}, [10, 9, *range(9)], k=1)["MRR@10"] == 1.0
    assert measure({9: 1}, [10, 9, *range(9)], k=1)["MRR@10"] == 0.5


# --- judgment files -------------------------------------------------------------------------------


def test_csv_judgments_by_text_and_by_id(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "j.csv",
        "query,document,doc_id,grade\n"
        "capital of China,Beijing is the capital of China.,,2\n"
        "capital of China,,2,0\n"
        "cities in France,,4,1\n",
    )
    judgments = read_judgments(path, DOCUMENTS, 10_000)
    assert judgments.grades == {"capital of China": {0: 2, 1: 0}, "cities in France": {3: 1}}
    assert judgments.rows == 3


def test_jsonl_judgments(tmp_path: Path) -> None:
    path = write(
        tmp_path, "j.jsonl", '{"query": "q", "doc_id": 3, "grade": 1}\n\n{"query": "q", "doc_id": 1, "grade": 0}\n'
    )
    assert read_judgments(path, DOCUMENTS, 10_000).grades == {"q": {2: 1, 0: 0}}


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("a.csv", "question,doc_id,grade\nq,1,1\n", "needs the columns query, grade, and document"),
        ("b.csv", "query,doc_id,grade\nq,1,1\nq,9,1\n", "Row 3: no document has doc_id '9'; ids are positions 1 to 4"),
        ("c.csv", "query,document,grade\nq,Rome is in Italy.,1\n", "Row 2: the document 'Rome is in Italy.' is not"),
        ("d.csv", "query,doc_id,grade\nq,1,high\n", "Row 2: the grade 'high' is not a number"),
        ("e.csv", "query,doc_id,grade\nq,1,0.5\n", "Row 2: the grade 0.5 is not a whole number"),
        ("f.csv", "query,doc_id,grade\nq,1,1\nr,2,0\nr,3,0\n", "Row 3: the query 'r' has no relevant document"),
        ("g.csv", "query,doc_id,grade\nq,1,1\nq,1,2\n", "Row 3: document 1 is judged again for this query (Row 2)"),
        ("h.csv", "query,doc_id,grade\n,1,1\n", "Row 2: the query is empty"),
        ("i.jsonl", '{"query": "q", "doc_id": 1, "grade": 1}\n{"query": "q", "grade": 1}\n', "Line 2: no document"),
        ("j.txt", "query,doc_id,grade\n", "judgments must be a .csv or .jsonl file"),
        ("k.jsonl", '{"query": "q", "doc_id": 1, "grade": 1}\nnot json\n', "Line 2 is not valid JSON"),
    ],
)
def test_bad_judgment_files_get_one_line_naming_the_row(tmp_path: Path, name: str, text: str, message: str) -> None:
    with pytest.raises(DocumentError) as caught:  # JudgmentError, or the upload reader's own
        read_judgments(write(tmp_path, name, text), DOCUMENTS, 10_000)
    assert message in str(caught.value) and "\n" not in str(caught.value)
