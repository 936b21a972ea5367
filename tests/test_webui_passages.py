"""Passage windows and aggregation (webui/passages.py): pure text logic."""

from __future__ import annotations

import itertools
import re

import pytest

from webui.passages import Passage, best_passages, window_spans, window_texts

WORDS = [f"w{index:03d}" for index in range(300)]
TEXT = " ".join(WORDS)


def test_windows_fit_the_byte_limit_and_cover_the_text_in_order() -> None:
    windows = window_texts(TEXT, 200)
    assert len(windows) > 1
    assert all(len(window.encode()) <= 200 for window in windows)
    seen = [word for window in windows for word in window.split()]
    # Every word appears, and in order once duplicates from the overlaps are dropped.
    assert sorted(set(seen)) == WORDS
    assert list(dict.fromkeys(seen)) == WORDS


def test_consecutive_windows_overlap_by_about_a_quarter() -> None:
    windows = window_texts(TEXT, 200, overlap=0.25)
    for before, after in itertools.pairwise(windows):
        shared = set(before.split()) & set(after.split())
        shared_bytes = sum(len(word) + 1 for word in shared)
        assert 0.15 * 200 <= shared_bytes <= 0.25 * 200, (before, after)
        # The shared words are the tail of one window and the head of the next.
        assert after.startswith(" ".join(sorted(shared)))


def test_windows_without_overlap_partition_the_words() -> None:
    windows = window_texts(TEXT, 120, overlap=0.0)
    assert [word for window in windows for word in window.split()] == WORDS


def test_a_word_longer_than_the_window_is_cut_and_multibyte_characters_stay_whole() -> None:
    text = "short " + "é" * 50 + " tail"
    windows = window_texts(text, 16, overlap=0.0)
    assert all(len(window.encode()) <= 16 for window in windows)
    assert "".join(windows).replace(" ", "") == text.replace(" ", "")


def test_a_document_takes_its_best_passage_and_remembers_which() -> None:
    documents = ["doc zero", "doc one, long", "doc two"]
    passages = [
        Passage(0, 1, 1, "doc zero"),
        Passage(1, 1, 3, "p1"),
        Passage(1, 2, 3, "p2"),
        Passage(1, 3, 3, "p3"),
        Passage(2, 1, 1, "doc two"),
    ]
    ranked = best_passages(passages, [0.30, 0.10, 0.90, 0.50, 0.60], documents)
    assert [(item.position, item.score, item.passage.number) for item in ranked] == [
        (1, 0.90, 2),
        (2, 0.60, 1),
        (0, 0.30, 1),
    ]
    assert ranked[0].text == "doc one, long" and ranked[0].passage.text == "p2"


def test_ties_keep_the_earliest_passage_and_the_input_order() -> None:
    documents = ["a", "b"]
    passages = [Passage(0, 1, 2, "a1"), Passage(0, 2, 2, "a2"), Passage(1, 1, 1, "b")]
    ranked = best_passages(passages, [0.5, 0.5, 0.5], documents)
    assert [(item.position, item.passage.number) for item in ranked] == [(0, 1), (1, 1)]


def test_scores_must_match_passages() -> None:
    with pytest.raises(ValueError, match="one score per passage"):
        best_passages([Passage(0, 1, 1, "a")], [], ["a"])


def test_window_texts_rejects_a_zero_width() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        window_texts("abc", 0)
    assert window_texts("   ", 10) == []
    assert re.fullmatch(r"abc", window_texts("abc", 10)[0])


def test_spans_are_the_windows_positions_in_the_text() -> None:
    text = "  aa bb\tcc  dd ee  "
    # Units "aa ", "bb\t", "cc  " make 10 bytes; the rest is "dd ee". Whitespace is left out.
    assert window_spans(text, 10, overlap=0.0) == [(2, 10), (12, 17)]
