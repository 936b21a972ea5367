"""Documents longer than the model's window: overlapping passages, each scored, best one wins.

Pure text work: where a document is cut (`window_spans`), what a passage is, and how the
passages' scores make one score per document (`best_passages`). How long a passage may be,
and the token counts that decide it, are webui/prepared.py's job.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

OVERLAP = 0.25
"""Share of a passage repeated at the start of the next, so no sentence is only ever cut."""


class BudgetError(ValueError):
    """The query (with instruction) leaves no room for any document; one line for the analyst."""


@dataclass(frozen=True)
class Passage:
    document: int
    """0-based position of the document it comes from."""
    number: int
    """1-based passage number within that document."""
    count: int
    """How many passages that document was split into (1 when it fit whole)."""
    text: str
    tokens: int = 0
    """Tokens as the server reads the passage: counted by /tokenize, or, for a text short
    enough to fit without a count, estimated from its bytes. Sizes batches only."""


@dataclass(frozen=True)
class ScoredDocument:
    position: int
    """0-based position in the analyst's input."""
    score: float
    """The best passage's relevance score."""
    passage: Passage
    """The passage that gave that score (the whole document when it was not split)."""
    text: str
    """The whole document."""


def _units(text: str, max_unit_bytes: int) -> list[tuple[int, int]]:
    """Spans of whole words (with trailing space); words longer than max_unit_bytes are cut."""
    spans = []
    for match in re.finditer(r"\S+\s*", text):
        start, end = match.span()
        while len(text[start:end].encode("utf-8")) > max_unit_bytes:
            cut = start
            size = 0
            while cut < end and size + len(text[cut].encode("utf-8")) <= max_unit_bytes:
                size += len(text[cut].encode("utf-8"))
                cut += 1
            cut = max(cut, start + 1)
            spans.append((start, cut))
            start = cut
        if start < end:
            spans.append((start, end))
    return spans


def window_spans(text: str, max_bytes: int, overlap: float = OVERLAP) -> list[tuple[int, int]]:
    """(start, end) of windows of at most max_bytes UTF-8 bytes, cut between words, each
    overlapping the last; spans rather than strings, so a cache can keep the text once."""
    if max_bytes < 1:
        raise ValueError("max_bytes must be at least 1")
    units = _units(text, max(1, max_bytes // 4))
    if not units:
        return []
    sizes = [len(text[start:end].encode("utf-8")) for start, end in units]
    windows = []
    first = 0
    while True:
        last, size = first, sizes[first]
        while last + 1 < len(units) and size + sizes[last + 1] <= max_bytes:
            last += 1
            size += sizes[last]
        windows.append(_stripped(text, units[first][0], units[last][1]))
        if last == len(units) - 1:
            return windows
        # Step back from the window's end until about `overlap` of it is repeated.
        following, kept = last + 1, 0
        while following - 1 > first and kept + sizes[following - 1] <= overlap * max_bytes:
            following -= 1
            kept += sizes[following]
        first = following


def _stripped(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def window_texts(text: str, max_bytes: int, overlap: float = OVERLAP) -> list[str]:
    """The texts of `window_spans`."""
    return [text[start:end] for start, end in window_spans(text, max_bytes, overlap)]


def best_passages(
    passages: Sequence[Passage], scores: Sequence[float], documents: Sequence[str]
) -> list[ScoredDocument]:
    """Each document takes its best passage's score (the earliest on ties), ranked best first."""
    if len(passages) != len(scores):
        raise ValueError("one score per passage is needed")
    best: dict[int, tuple[float, Passage]] = {}
    for passage, score in zip(passages, scores, strict=True):
        held = best.get(passage.document)
        if held is None or score > held[0]:
            best[passage.document] = (score, passage)
    ranked = [
        ScoredDocument(position, score, passage, documents[position]) for position, (score, passage) in best.items()
    ]
    # Stable sort: equal scores keep the analyst's order, as the server's own ranking does.
    ranked.sort(key=lambda item: (-item.score, item.position))
    return ranked
