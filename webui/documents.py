"""Turning what the analyst pasted or uploaded into a list of documents, with limits checked.

Pasted text splits one document per line, at blank lines, or at lines of `---`. Uploads are
.txt (split like pasted text), .csv (one document per row, from a chosen column) or .jsonl
(one per line, from a chosen field). Sizes are checked before a file is read whole, and binary
or non-UTF-8 files are refused with one clear line (`DocumentError`).
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Mapping, Sequence
from enum import StrEnum
from pathlib import Path

UPLOAD_SUFFIXES = (".txt", ".csv", ".jsonl")
TEXT_NAMES = frozenset({"text", "document", "doc", "body", "content", "passage", "abstract"})
"""Column or field names that conventionally hold the document itself."""
SAMPLE_ROWS = 100
"""Rows looked at to guess which column holds the documents."""


class DocumentError(ValueError):
    """Bad input from the analyst; the message is one line meant for them."""


class SplitMode(StrEnum):
    """How pasted text (or a .txt upload) is cut into documents; values are the UI labels."""

    LINES = "One per line"
    BLANK_LINES = "Blank lines"
    DASHES = "Lines of ---"


_BLANK_LINES = re.compile(r"\n[ \t]*\n")
_DASH_LINE = re.compile(r"^[ \t]*-{3,}[ \t]*$", re.MULTILINE)


def documents_from_text(text: str, mode: SplitMode) -> list[str]:
    """Cut text into documents, trimmed, dropping empty ones."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if mode is SplitMode.LINES:
        pieces = text.split("\n")
    elif mode is SplitMode.BLANK_LINES:
        pieces = _BLANK_LINES.split(text)
    else:
        pieces = _DASH_LINE.split(text)
    return [piece.strip() for piece in pieces if piece.strip()]


def join_documents(documents: list[str], mode: SplitMode) -> str:
    """The inverse of documents_from_text for documents that contain no separator of `mode`."""
    separator = {SplitMode.LINES: "\n", SplitMode.BLANK_LINES: "\n\n", SplitMode.DASHES: "\n---\n"}[mode]
    return separator.join(documents)


def text_field(value: object, what: str) -> str:
    """A text input as the page can use it: None is empty; a lone surrogate (which a browser
    or an API caller can send, and UTF-8 cannot encode) is refused in one line."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise DocumentError(f"The {what} must be text.")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise DocumentError(f"The {what} contains characters that are not valid Unicode; remove them.") from None
    return value


def query_field(value: object) -> str:
    """The query as a job needs it: text_field's checks, stripped, and not empty."""
    query = text_field(value, "query").strip()
    if not query:
        raise DocumentError("Enter a query to rank the documents against.")
    return query


def split_mode(label: object) -> SplitMode:
    try:
        return SplitMode(str(label))
    except ValueError:
        choices = ", ".join(f"“{mode.value}”" for mode in SplitMode)
        raise DocumentError(f"Choose how to split the pasted text: {choices}.") from None


def limit_problem(documents: Sequence[str], max_docs: int, max_doc_bytes: int) -> str | None:
    """Why Rerank would refuse these documents (too many, or the first one too large, 1-based
    as shown), or None. The live count line shows the same words before the click."""
    if len(documents) > max_docs:
        return f"{len(documents):,} documents; the limit is {max_docs:,} per request."
    for number, document in enumerate(documents, start=1):
        size = len(text_field(document, f"document {number}").encode("utf-8"))
        if size > max_doc_bytes:
            return f"Document {number} is {size:,} bytes; the limit is {max_doc_bytes:,} bytes."
    return None


def check_limits(documents: list[str], max_docs: int, max_doc_bytes: int) -> None:
    """Refuse too many or too large documents, naming the first offender."""
    problem = limit_problem(documents, max_docs, max_doc_bytes)
    if problem:
        raise DocumentError(problem)


def upload_kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in UPLOAD_SUFFIXES:
        raise DocumentError(f"{path.name}: only .txt, .csv and .jsonl files can be uploaded.")
    return suffix


def read_upload_text(path: Path, max_bytes: int) -> str:
    """The file as text: size checked from its metadata first, then read at most max_bytes + 1."""
    size = path.stat().st_size
    if size > max_bytes:
        raise DocumentError(f"{path.name} is {size:,} bytes; the upload limit is {max_bytes:,} bytes.")
    with path.open("rb") as handle:
        # Reading one byte past the limit catches a file that grew since stat().
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise DocumentError(f"{path.name} is over the upload limit of {max_bytes:,} bytes.")
    if b"\x00" in data:
        raise DocumentError(f"{path.name} looks binary (it contains NUL bytes); upload a text file.")
    try:
        # utf-8-sig drops the byte-order mark that spreadsheet exports often start with.
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise DocumentError(
            f"{path.name} is not UTF-8 text (bad byte at offset {error.start:,}); save it as UTF-8."
        ) from None


def _csv_reader(text: str) -> csv.DictReader[str]:
    # The delimiter is read from the header line alone: csv.Sniffer also weighs the cells,
    # and documents full of semicolons or tabs fool it.
    header = text.split("\n", 1)[0]
    delimiter = max((",", ";", "\t"), key=header.count) if any(d in header for d in ",;\t") else ","
    return csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)


def csv_columns(text: str) -> list[str]:
    """Header names of a CSV, the likeliest document column first (see `text_first`)."""
    reader = _csv_reader(text)
    try:
        fields = reader.fieldnames
        columns = [name for name in (fields or []) if name and name.strip()]
        sample = [row for _, row in zip(range(SAMPLE_ROWS), reader, strict=False)]
    except csv.Error as error:
        raise DocumentError(f"The CSV could not be read: {error}.") from None
    if not columns:
        raise DocumentError("The CSV has no header row; its first row must name the columns.")
    return text_first(columns, sample)


def _jsonl_objects(text: str) -> list[tuple[int, dict[str, object]]]:
    objects = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as error:
            raise DocumentError(f"Line {number} is not valid JSON ({error.msg}).") from None
        if not isinstance(value, dict):
            raise DocumentError(f"Line {number} is not a JSON object.")
        objects.append((number, value))
    return objects


def jsonl_fields(text: str) -> list[str]:
    """Fields holding text in any object, the likeliest document field first."""
    objects = [value for _, value in _jsonl_objects(text)]
    seen: dict[str, None] = {}
    for value in objects:
        for key, item in value.items():
            if isinstance(item, str):
                seen.setdefault(key, None)
    if not seen:
        raise DocumentError("No line of the JSONL file has a text field.")
    return text_first(list(seen), objects[:SAMPLE_ROWS])


def text_first(names: list[str], sample: Sequence[Mapping[str, object]]) -> list[str]:
    """Names ordered for the column picker: a conventional text name first, then the longest
    cells on average, so an `id` column is never the default."""

    def mean_length(name: str) -> float:
        cells = [cell for row in sample if isinstance(cell := row.get(name), str)]
        return sum(map(len, cells)) / len(cells) if cells else 0.0

    return sorted(names, key=lambda name: (name.strip().lower() not in TEXT_NAMES, -mean_length(name)))


def upload_choices(path: Path, max_bytes: int) -> list[str]:
    """Columns (CSV) or fields (JSONL) the analyst can pick; empty for .txt."""
    kind = upload_kind(path)
    if kind == ".txt":
        return []
    text = read_upload_text(path, max_bytes)
    return csv_columns(text) if kind == ".csv" else jsonl_fields(text)


def _pick(choice: str | None, names: list[str], file_name: str, what: str) -> str:
    """The chosen column or field; the first when none was chosen yet."""
    if not choice:
        return names[0]
    if choice not in names:
        raise DocumentError(f"{file_name} has no {what} {choice!r}; it has {', '.join(map(repr, names[:10]))}.")
    return choice


def documents_from_upload(path: Path, choice: str | None, mode: SplitMode, max_bytes: int) -> list[str]:
    """The upload's documents: .txt split like pasted text, CSV rows or JSONL lines by `choice`."""
    kind = upload_kind(path)
    text = read_upload_text(path, max_bytes)
    if kind == ".txt":
        return documents_from_text(text, mode)
    if kind == ".csv":
        column = _pick(choice, csv_columns(text), path.name, "column")
        try:
            cells = [row.get(column) or "" for row in _csv_reader(text)]
        except csv.Error as error:
            raise DocumentError(f"The CSV could not be read: {error}.") from None
        return [cell.strip() for cell in cells if cell.strip()]
    name = _pick(choice, jsonl_fields(text), path.name, "field")
    documents = []
    for _, value in _jsonl_objects(text):
        item = value.get(name)
        if isinstance(item, str) and item.strip():
            documents.append(item.strip())
    return documents
