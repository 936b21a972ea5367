"""Relevance judgments the analyst uploads for the Evaluate view: which documents are relevant
to which query, and how much.

A .csv file (header row) or a .jsonl file (one object a line) with, per judgment:
  - `query`: the query text;
  - `document` (the document's text, exactly as listed) or `doc_id` (its Position in the
    ranking table, 1-based, the order the documents came in);
  - `grade`: a whole number, 0 = not relevant, 1 or more = relevant (higher = more relevant).

Every problem is one line naming the row (CSV rows are counted as a spreadsheet counts them,
the header being row 1; JSONL by line): missing columns, an unknown document or id, a grade
that is not a whole number, a judgment given twice, a query with no relevant document.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from webui.documents import DocumentError, _csv_reader, _jsonl_objects, read_upload_text

QUERY_NAMES = ("query",)
DOCUMENT_NAMES = ("document", "text")
ID_NAMES = ("doc_id", "id", "position")
GRADE_NAMES = ("grade", "relevance", "label")
MAX_QUERIES = 50
"""Each judged query reranks every document once (twice with a second instruction): this
bounds one evaluation's share of the server, as the document limit bounds a rerank."""


class JudgmentError(DocumentError):
    """A judgment file the page cannot use; one line that names the row."""


@dataclass(frozen=True)
class Judgments:
    grades: dict[str, dict[int, int]]
    """query -> {0-based document position: grade}, queries in the order they first appear."""
    rows: int


def _pick_name(names: Sequence[str], wanted: Sequence[str]) -> str | None:
    lowered = {name.strip().lower(): name for name in names if name}
    return next((lowered[name] for name in wanted if name in lowered), None)


def _records(path: Path, max_bytes: int) -> tuple[list[str], Iterator[tuple[str, Mapping[str, object]]]]:
    """(field names, (row label, record) pairs) of a CSV or JSONL judgment file."""
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl"):
        raise JudgmentError(f"{path.name}: judgments must be a .csv or .jsonl file.")
    text = read_upload_text(path, max_bytes)
    if suffix == ".csv":
        reader = _csv_reader(text)
        names = [name for name in reader.fieldnames or [] if name]

        def csv_rows() -> Iterator[tuple[str, Mapping[str, object]]]:
            # DictReader's line_num is the physical line; rows are counted as a spreadsheet does.
            for number, row in enumerate(reader, start=2):
                yield f"Row {number}", row

        return names, csv_rows()
    objects = _jsonl_objects(text)
    names = list(dict.fromkeys(key for _, value in objects for key in value))
    return names, ((f"Line {number}", value) for number, value in objects)


def _grade(value: object, where: str) -> int:
    text = str(value).strip() if value is not None else ""
    try:
        number = float(text)
    except ValueError:
        raise JudgmentError(f"{where}: the grade {text[:40]!r} is not a number.") from None
    if not number.is_integer() or number < 0:
        raise JudgmentError(f"{where}: the grade {text[:40]} is not a whole number of 0 or more.")
    return int(number)


def read_judgments(path: Path, documents: Sequence[str], max_bytes: int) -> Judgments:
    """The file's judgments, each tied to a document position; JudgmentError on the first problem."""
    names, records = _records(path, max_bytes)
    query_name = _pick_name(names, QUERY_NAMES)
    grade_name = _pick_name(names, GRADE_NAMES)
    document_name = _pick_name(names, DOCUMENT_NAMES)
    id_name = _pick_name(names, ID_NAMES)
    if query_name is None or grade_name is None or (document_name is None and id_name is None):
        found = ", ".join(names[:10]) or "none"
        raise JudgmentError(
            f"{path.name} needs the columns query, grade, and document (its text) or doc_id (its position); "
            f"found: {found}."
        )
    positions: dict[str, list[int]] = {}
    for position, document in enumerate(documents):
        positions.setdefault(document.strip(), []).append(position)
    grades: dict[str, dict[int, int]] = {}
    first_row: dict[str, str] = {}
    seen: dict[tuple[str, int], str] = {}
    count = 0
    for where, record in records:
        query = str(record.get(query_name) or "").strip()
        if not query:
            raise JudgmentError(f"{where}: the query is empty.")
        grade = _grade(record.get(grade_name), where)
        found_at = _positions(record, document_name, id_name, positions, len(documents), where)
        judged = grades.setdefault(query, {})
        first_row.setdefault(query, where)
        for position in found_at:
            if (query, position) in seen:
                raise JudgmentError(
                    f"{where}: document {position + 1} is judged again for this query ({seen[(query, position)]})."
                )
            seen[(query, position)] = where
            judged[position] = grade
        count += 1
        if len(grades) > MAX_QUERIES:
            raise JudgmentError(f"{where}: more than {MAX_QUERIES} queries; evaluate at most {MAX_QUERIES} at once.")
    if not grades:
        raise JudgmentError(f"{path.name} has no judgments.")
    for query, judged in grades.items():
        if not any(grade > 0 for grade in judged.values()):
            raise JudgmentError(
                f"{first_row[query]}: the query {query[:60]!r} has no relevant document (no grade above 0)."
            )
    return Judgments(grades=grades, rows=count)


def _positions(
    record: Mapping[str, object],
    document_name: str | None,
    id_name: str | None,
    positions: Mapping[str, list[int]],
    total: int,
    where: str,
) -> list[int]:
    """The 0-based positions a record judges: by doc_id when it has one, else by text."""
    raw_id = record.get(id_name) if id_name else None
    if raw_id is not None and str(raw_id).strip():
        text = str(raw_id).strip()
        if not text.isdigit() or not 1 <= int(text) <= total:
            raise JudgmentError(f"{where}: no document has doc_id {text[:40]!r}; ids are positions 1 to {total}.")
        return [int(text) - 1]
    text = str(record.get(document_name) or "").strip() if document_name else ""
    if not text:
        raise JudgmentError(f"{where}: no document text and no doc_id.")
    if text not in positions:
        raise JudgmentError(f"{where}: the document {text[:60]!r} is not among the documents to rank.")
    return positions[text]
