"""Splitting pasted text and parsing uploads (webui/documents.py): pure logic, real files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from webui.documents import (
    DocumentError,
    SplitMode,
    check_limits,
    csv_columns,
    documents_from_text,
    documents_from_upload,
    join_documents,
    jsonl_fields,
    limit_problem,
    read_upload_text,
    upload_choices,
)


def test_one_per_line_drops_blank_lines_and_trims() -> None:
    text = "  first doc \r\n\r\nsecond doc\n   \nthird\r"
    assert documents_from_text(text, SplitMode.LINES) == ["first doc", "second doc", "third"]


def test_blank_lines_keep_multi_line_documents_together() -> None:
    text = "para one\nstill one\n\npara two\n \t \npara three\n\n\n"
    assert documents_from_text(text, SplitMode.BLANK_LINES) == ["para one\nstill one", "para two", "para three"]


def test_dash_lines_split_only_on_lines_of_three_or_more_dashes() -> None:
    text = "a\nb -- not a split\n---\nc\n  -----  \nd\n--\ne"
    assert documents_from_text(text, SplitMode.DASHES) == ["a\nb -- not a split", "c", "d\n--\ne"]


def test_empty_and_whitespace_text_gives_no_documents() -> None:
    for mode in SplitMode:
        assert documents_from_text(" \n\n \t\n", mode) == []
    assert documents_from_text("---\n \n-----", SplitMode.DASHES) == []


@pytest.mark.parametrize("mode", list(SplitMode))
def test_join_is_the_inverse_of_split(mode: SplitMode) -> None:
    documents = ["alpha beta", "gamma", "delta epsilon"]
    assert documents_from_text(join_documents(documents, mode), mode) == documents


def test_limits_name_the_first_offending_document() -> None:
    check_limits(["a", "b"], max_docs=2, max_doc_bytes=1)
    with pytest.raises(DocumentError, match="3 documents; the limit is 2"):
        check_limits(["a", "b", "c"], max_docs=2, max_doc_bytes=10)
    # "é" is two bytes in UTF-8: the limit is on bytes, not characters.
    with pytest.raises(DocumentError, match="Document 2 is 6 bytes; the limit is 5 bytes"):
        check_limits(["ok", "ééé"], max_docs=5, max_doc_bytes=5)


def test_txt_upload_splits_like_pasted_text(tmp_path: Path) -> None:
    path = tmp_path / "docs.txt"
    path.write_text("\ufeffone\n\ntwo\nstill two\n", encoding="utf-8")
    assert documents_from_upload(path, None, SplitMode.BLANK_LINES, 1000) == ["one", "two\nstill two"]
    assert upload_choices(path, 1000) == []


def test_csv_upload_reads_the_chosen_column_with_quoted_newlines(tmp_path: Path) -> None:
    path = tmp_path / "docs.csv"
    path.write_text('id,text,source\n1,"first, with comma",web\n2,"second\nover two lines",mail\n3,,web\n')
    assert upload_choices(path, 10_000) == ["text", "source", "id"]
    assert documents_from_upload(path, "text", SplitMode.LINES, 10_000) == [
        "first, with comma",
        "second\nover two lines",
    ]
    assert documents_from_upload(path, "source", SplitMode.LINES, 10_000) == ["web", "mail", "web"]
    assert documents_from_upload(path, None, SplitMode.LINES, 10_000)[0] == "first, with comma"
    with pytest.raises(DocumentError, match=r"docs\.csv has no column 'body'; it has 'text', 'source', 'id'"):
        documents_from_upload(path, "body", SplitMode.LINES, 10_000)


def test_csv_delimiter_comes_from_the_header_not_the_cells(tmp_path: Path) -> None:
    path = tmp_path / "semicolons.csv"
    path.write_text("text;lang\nuna frase, con coma;es\nanother, one; really;en\n", encoding="utf-8-sig")
    assert csv_columns(path.read_text(encoding="utf-8-sig")) == ["text", "lang"]
    assert documents_from_upload(path, "text", SplitMode.LINES, 10_000) == ["una frase, con coma", "another, one"]


def test_the_longest_column_is_offered_first_when_none_is_called_text() -> None:
    text = "id,title,summary\n1,Short,A much longer summary of the document\n2,Tiny,Another long summary here\n"
    assert csv_columns(text) == ["summary", "title", "id"]
    assert csv_columns("ID,Body,notes\n1,x,a longer note\n") == ["Body", "notes", "ID"]


def test_csv_without_header_is_refused() -> None:
    with pytest.raises(DocumentError, match="no header row"):
        csv_columns("")


def test_jsonl_upload_reads_the_chosen_field(tmp_path: Path) -> None:
    path = tmp_path / "docs.jsonl"
    rows = [{"id": 1, "title": "T1", "text": "body one"}, {"id": 2, "text": "body two"}, {"id": 3, "title": "T3"}]
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n\n")
    assert upload_choices(path, 10_000) == ["text", "title"]
    assert documents_from_upload(path, "text", SplitMode.LINES, 10_000) == ["body one", "body two"]
    assert documents_from_upload(path, "title", SplitMode.LINES, 10_000) == ["T1", "T3"]


def test_jsonl_errors_name_the_line() -> None:
    with pytest.raises(DocumentError, match="Line 2 is not valid JSON"):
        jsonl_fields('{"text": "a"}\n{"text": \n')
    with pytest.raises(DocumentError, match="Line 1 is not a JSON object"):
        jsonl_fields('["a list"]\n')
    with pytest.raises(DocumentError, match=r"No line of the JSONL file has a text field"):
        jsonl_fields('{"n": 1}\n')


def test_size_is_checked_before_the_file_is_read(tmp_path: Path) -> None:
    # A sparse 64 GiB file: reading it whole would exhaust memory; stat() answers at once.
    path = tmp_path / "huge.txt"
    with path.open("wb") as handle:
        handle.truncate(64 * 1024**3)
    with pytest.raises(DocumentError, match=r"huge\.txt is 68,719,476,736 bytes; the upload limit is 1,000 bytes"):
        read_upload_text(path, 1000)


def test_binary_upload_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "image.txt"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    with pytest.raises(DocumentError, match="looks binary"):
        documents_from_upload(path, None, SplitMode.LINES, 1000)


def test_invalid_utf8_is_refused_with_the_offset(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes("text\ncaf\u00e9\n".encode("latin-1"))
    with pytest.raises(DocumentError, match=r"not UTF-8 text .*offset 8"):
        upload_choices(path, 1000)


def test_other_file_types_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "report.pdf"
    path.write_bytes(b"%PDF-1.7")
    with pytest.raises(DocumentError, match=r"only \.txt, \.csv and \.jsonl"):
        documents_from_upload(path, None, SplitMode.LINES, 1000)


def test_the_count_line_and_rerank_share_one_refusal() -> None:
    """limit_problem is what the live count line shows and what check_limits raises."""
    assert limit_problem(["a", "b"], max_docs=2, max_doc_bytes=1) is None
    assert limit_problem(["a"] * 3, max_docs=2, max_doc_bytes=10) == "3 documents; the limit is 2 per request."
    big = "x" * 5_000_000
    assert limit_problem(["ok", big], max_docs=5, max_doc_bytes=100_000) == (
        "Document 2 is 5,000,000 bytes; the limit is 100,000 bytes."
    )
    with pytest.raises(DocumentError) as refused:
        check_limits(["ok", big], max_docs=5, max_doc_bytes=100_000)
    assert str(refused.value) == "Document 2 is 5,000,000 bytes; the limit is 100,000 bytes."
