"""Table rows, highlighting, escaping and CSV export (webui/results.py): pure logic."""

from __future__ import annotations

import csv
import io

import pytest

from webui.passages import Passage, ScoredDocument
from webui.results import (
    CSV_HEADERS,
    TABLE_DATATYPES,
    TABLE_HEADERS,
    csv_text,
    defuse_formula,
    highlight,
    query_terms,
    ranking_table,
    score_bar,
    table_rows,
)


def whole(position: int, score: float, text: str) -> ScoredDocument:
    return ScoredDocument(position, score, Passage(position, 1, 1, text), text)


def test_query_terms_drop_stopwords_and_duplicates_longest_first() -> None:
    assert query_terms("What is the capital of China? china CAPITAL!") == ["capital", "china"]
    assert query_terms("the of is") == []


def test_highlight_marks_whole_words_case_insensitively() -> None:
    text = "China's capital, Beijing; CHINA and chinaware."
    assert highlight(text, ["china"]) == "<mark>China</mark>&#x27;s capital, Beijing; <mark>CHINA</mark> and chinaware."


def test_document_html_and_script_are_escaped_never_live() -> None:
    text = '<script>alert("x")</script><img src=x onerror=alert(1)> capital'
    out = highlight(text, ["capital", "script", "img"])
    assert "<script>" not in out and "<img" not in out
    assert out == (
        "&lt;<mark>script</mark>&gt;alert(&quot;x&quot;)&lt;/<mark>script</mark>&gt;"
        "&lt;<mark>img</mark> src=x onerror=alert(1)&gt; <mark>capital</mark>"
    )


@pytest.mark.parametrize("term", ["amp", "lt", "gt", "quot", "x27"])
def test_highlight_never_touches_entities(term: str) -> None:
    text = "a < b & c > d \"q\" 'x'"
    assert highlight(text, [term]) == "a &lt; b &amp; c &gt; d &quot;q&quot; &#x27;x&#x27;"


def test_highlight_without_terms_only_escapes() -> None:
    assert highlight("<b>bold</b>", []) == "&lt;b&gt;bold&lt;/b&gt;"


def test_score_bar_is_proportional_text() -> None:
    assert score_bar(0.0) == ""
    assert score_bar(1.0) == "█" * 10
    assert score_bar(0.5) == "█" * 5
    assert score_bar(0.84) == "████████▍"
    assert score_bar(7.0) == "█" * 10 and score_bar(-1.0) == ""


def test_table_rows_rank_score_bar_escaped_text_position_passage() -> None:
    split = ScoredDocument(2, 0.91234567, Passage(2, 3, 4, "best <passage> capital"), "long document text")
    ranked = [split, whole(0, 0.5, "Beijing is the capital"), whole(1, 0.1, "Paris")]
    rows = table_rows(ranked, "capital?", top_n=2)
    assert len(TABLE_HEADERS) == len(TABLE_DATATYPES) == len(rows[0])
    assert rows == [
        [1, 0.9123, "█████████▏", "best &lt;passage&gt; <mark>capital</mark>", 3, "3 of 4"],
        [2, 0.5, "█████", "Beijing is the <mark>capital</mark>", 1, "whole"],
    ]


def test_table_clips_long_documents_for_display() -> None:
    rows = table_rows([whole(0, 0.5, "word " * 1000)], "word", top_n=10)
    assert str(rows[0][3]).endswith("…") and len(str(rows[0][3])) < 1200 * 15


@pytest.mark.parametrize("prefix", ["=", "+", "-", "@", "\t", "\r"])
def test_csv_defuses_formula_prefixes(prefix: str) -> None:
    assert defuse_formula(prefix + 'HYPERLINK("http://evil")') == "'" + prefix + 'HYPERLINK("http://evil")'


def test_plain_cells_are_left_alone() -> None:
    assert defuse_formula("Beijing = capital") == "Beijing = capital"


def test_csv_has_whole_documents_full_scores_and_no_live_formulas() -> None:
    split = ScoredDocument(1, 0.875, Passage(1, 2, 3, "-passage two"), "=SUM(A1:A9) and more,\nover lines")
    ranked = [split, whole(0, 0.25, "@cmd|' /C calc'!A0"), whole(2, 0.125, "plain")]
    rows = list(csv.reader(io.StringIO(csv_text(ranked, top_n=2))))
    assert rows[0] == CSV_HEADERS
    assert rows[1] == ["1", "0.875", "2", "2 of 3", "'-passage two", "'=SUM(A1:A9) and more,\nover lines"]
    assert rows[2] == ["2", "0.25", "1", "whole", "", "'@cmd|' /C calc'!A0"]
    assert len(rows) == 3
    assert float(rows[1][1]) == 0.875


def test_the_table_shows_every_score_with_four_decimals_and_keeps_the_numbers() -> None:
    ranked = [whole(0, 0.65, "Beijing"), whole(1, 0.52184, "Paris"), whole(2, 1.0, "Tokyo")]
    styled = ranking_table(ranked, "capital", 3)
    shown = styled.data  # what the API returns: numbers, rounded to the shown decimals
    assert list(shown["Score"]) == [0.65, 0.5218, 1.0]
    html = styled.to_html()
    assert all(text in html for text in (">0.6500<", ">0.5218<", ">1.0000<"))
    assert ">0.65<" not in html
