"""The ranking as the analyst sees it: table rows with escaped, highlighted text, and a CSV.

Document text is HTML-escaped before anything else touches it, so markup in a document is shown,
never run. The CSV defuses cells a spreadsheet would read as a formula.
"""

from __future__ import annotations

import contextlib
import csv
import html
import io
import re
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import pandas as pd

from webui.passages import ScoredDocument

if TYPE_CHECKING:
    from pandas.io.formats.style import Styler

TABLE_HEADERS = ["Rank", "Score", "Relevance", "Document", "Position", "Passage"]
TABLE_DATATYPES: list[Literal["number", "str", "html"]] = ["number", "number", "str", "html", "number", "str"]
"""Only "Document" is html, and its text is escaped first; the bar is plain text."""

CSV_HEADERS = ["rank", "score", "position", "passage", "passage_text", "document"]

SCORE_DECIMALS = 4
"""Every score the page prints has this many decimals ("0.6500" beside "0.5218", never "0.65")."""

DISPLAY_CHARS = 1200
"""Characters of a document shown in a table cell; the CSV keeps the whole text."""

_STOPWORDS = frozenset(
    {
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "for",
        "from",
        "has",
        "have",
        "how",
        "in",
        "is",
        "it",
        "its",
        "of",
        "on",
        "or",
        "that",
        "the",
        "this",
        "to",
        "was",
        "were",
        "what",
        "when",
        "where",
        "which",
        "who",
        "why",
        "will",
        "with",
    }
)
"""Words too common to be worth highlighting."""

_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""What makes Excel, LibreOffice or Sheets read a cell as a formula (CSV injection)."""


def query_terms(query: str) -> list[str]:
    """Distinct words of the query worth highlighting, longest first (so longer terms win)."""
    words = {word.lower() for word in re.findall(r"\w+", query) if word.lower() not in _STOPWORDS}
    return sorted(words, key=lambda word: (-len(word), word))


def highlight(text: str, terms: Sequence[str]) -> str:
    """Escaped HTML of text with whole-word, case-insensitive matches wrapped in <mark>.

    Matching runs on the raw text and each piece is escaped on its own, so a match can never
    fall inside an entity such as `&amp;`.
    """
    if not terms:
        return html.escape(text)
    pattern = re.compile(r"(?<!\w)(?:" + "|".join(re.escape(term) for term in terms) + r")(?!\w)", re.IGNORECASE)
    pieces = []
    last = 0
    for match in pattern.finditer(text):
        pieces.append(html.escape(text[last : match.start()]))
        pieces.append("<mark>" + html.escape(match.group(0)) + "</mark>")
        last = match.end()
    pieces.append(html.escape(text[last:]))
    return "".join(pieces)


def clip(text: str, limit: int = DISPLAY_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def score_bar(score: float, width: int = 10) -> str:
    """A unicode bar, eighths of a block per step; plain text renders in any table."""
    eighths = round(max(0.0, min(1.0, score)) * width * 8)
    full, part = divmod(eighths, 8)
    return "█" * full + ("", "▏", "▎", "▍", "▌", "▋", "▊", "▉")[part]


def format_score(score: object) -> str:
    """A score as the page prints it; object, because pandas' Styler passes cells untyped."""
    return f"{float(score):.{SCORE_DECIMALS}f}"  # type: ignore[arg-type]


def passage_label(item: ScoredDocument) -> str:
    if item.passage.count == 1:
        return "whole"
    return f"{item.passage.number} of {item.passage.count}"


def table_rows(ranked: Sequence[ScoredDocument], query: str, top_n: int) -> list[list[object]]:
    """Rows for the results table: best first, at most top_n; position is 1-based as pasted."""
    terms = query_terms(query)
    rows: list[list[object]] = []
    for rank, item in enumerate(ranked[:top_n], start=1):
        shown = item.passage.text if item.passage.count > 1 else item.text
        rows.append(
            [
                rank,
                round(item.score, SCORE_DECIMALS),
                score_bar(item.score),
                highlight(clip(shown), terms),
                item.position + 1,
                passage_label(item),
            ]
        )
    return rows


def ranking_table(ranked: Sequence[ScoredDocument], query: str, top_n: int) -> Styler:
    """The table as shown: the rows' numbers stay numbers (the API and sorting get them), and
    the Score column is displayed with SCORE_DECIMALS decimals whatever its trailing zeros."""
    frame = pd.DataFrame(table_rows(ranked, query, top_n), columns=TABLE_HEADERS)
    return frame.style.format(format_score, subset=["Score"])


def defuse_formula(cell: str) -> str:
    """Prefix a quote to cells a spreadsheet would evaluate; the text itself is kept."""
    return "'" + cell if cell.startswith(_FORMULA_STARTS) else cell


def csv_text(ranked: Sequence[ScoredDocument], top_n: int) -> str:
    """The table's rows as CSV, with whole documents and formula-like cells defused."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_HEADERS)
    for rank, item in enumerate(ranked[:top_n], start=1):
        passage_text = item.passage.text if item.passage.count > 1 else ""
        writer.writerow(
            [
                rank,
                item.score,
                item.position + 1,
                passage_label(item),
                defuse_formula(passage_text),
                defuse_formula(item.text),
            ]
        )
    return buffer.getvalue()


EXPORT_KEEP_S = 3600.0
"""Exports older than this are deleted: they hold the analyst's documents."""


def save_export(directory: Path, kind: str, text: str) -> Path:
    """Write one CSV export named `kind-TIME-RANDOM.csv`, deleting this kind's exports older
    than EXPORT_KEEP_S first. utf-8-sig, so that Excel opens non-ASCII text correctly."""
    cutoff = time.time() - EXPORT_KEEP_S
    for old in directory.glob(f"{kind}-*.csv"):
        with contextlib.suppress(FileNotFoundError):
            if old.stat().st_mtime < cutoff:
                old.unlink()
    path = directory / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}.csv"
    path.write_text(text, encoding="utf-8-sig", newline="")
    return path
