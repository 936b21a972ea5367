"""Documents longer than the model's window: overlapping passages, each scored, best one wins.

The budget is the number of tokens a document may have, from the contract the server
publishes (server/contract.py):
  - a Qwen3 yes/no scorer sees query, instruction and document in one prompt, so the budget is
    max_model_len - tokens(query) - tokens(instruction) - template_tokens, and at most the
    server's max_doc_tokens; texts are counted as the template will read them (control-token
    strings neutralised);
  - a plain scorer (MiniLM embeds each text alone) gives each text max_model_len.

Whether a text fits is proved without a server call when possible: a token covers at least one
UTF-8 byte, so a text of n bytes has at most n + specials tokens (`specials` being what the
tokenizer adds to an empty text, e.g. [CLS] and [SEP]). Otherwise the server's /tokenize counts.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from server.contract import neutralise_control_tokens
from webui.client import ModelInfo, PromptTooLong, RerankAnswer, RerankClient

MIN_BUDGET = 16
"""Passages are not made shorter than this many tokens."""

OVERLAP = 0.25
"""Share of a passage repeated at the start of the next, so no sentence is only ever cut."""

TokenCounter = Callable[[str], Awaitable[int]]


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


def window_texts(text: str, max_bytes: int, overlap: float = OVERLAP) -> list[str]:
    """Windows of at most max_bytes UTF-8 bytes, cut between words, each overlapping the last."""
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
        windows.append(text[units[first][0] : units[last][1]].strip())
        if last == len(units) - 1:
            return windows
        # Step back from the window's end until about `overlap` of it is repeated.
        following, kept = last + 1, 0
        while following - 1 > first and kept + sizes[following - 1] <= overlap * max_bytes:
            following -= 1
            kept += sizes[following]
        first = following


async def split_document(text: str, budget: int, specials: int, count_tokens: TokenCounter) -> list[str]:
    """The document whole if it fits the budget, else overlapping windows that each provably fit."""
    provable_bytes = budget - specials
    if provable_bytes < 1:
        raise BudgetError("The query leaves no room for documents in the model's window; shorten it.")
    size = len(text.encode("utf-8"))
    if size <= provable_bytes:
        return [text]
    total = await count_tokens(text)
    if total <= budget:
        return [text]
    # Start from this document's own bytes-per-token, a little under, then shrink until every
    # window is counted within budget; at provable_bytes no count is needed, so this ends.
    width = max(provable_bytes, int(0.9 * budget * size / total))
    while True:
        windows = window_texts(text, width)
        if width <= provable_bytes:
            return windows
        worst = 0
        for window in windows:
            if len(window.encode("utf-8")) > provable_bytes:
                worst = max(worst, await count_tokens(window))
        if worst <= budget:
            return windows
        width = max(provable_bytes, min(width - 1, int(width * budget / worst * 0.95)))


async def document_passages(
    documents: Sequence[str], budget: int, specials: int, count_tokens: TokenCounter
) -> list[Passage]:
    """Every document's passages, in document order. Calls run one at a time: a job holds at
    most one connection, which is what keeps the server's load within the concurrency limit."""
    passages: list[Passage] = []
    for position, document in enumerate(documents):
        pieces = await split_document(document, budget, specials, count_tokens)
        passages.extend(Passage(position, number, len(pieces), piece) for number, piece in enumerate(pieces, 1))
    return passages


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


@dataclass(frozen=True)
class RankingOutcome:
    ranked: list[ScoredDocument]
    prompt_tokens: int
    long_documents: int
    """How many documents were longer than the window and were split into passages."""
    budget: int


async def rank_documents(
    client: RerankClient,
    model: ModelInfo,
    query: str,
    documents: Sequence[str],
    *,
    instruction: str | None,
    batch_size: int,
) -> RankingOutcome:
    """Score documents through /v1/rerank; split what is too long; keep each document's best.

    Each batch is first sent whole: most documents fit, and measuring every one through
    /tokenize first cost a call per document (+34% page latency for 20 documents on a
    CPU host). Only a batch that the server refuses as too long is measured and split.
    """
    counted: dict[str, int] = {}
    contract = model.contract
    as_read = neutralise_control_tokens if contract.takes_instruction else str

    async def count(text: str) -> int:
        if text not in counted:
            counted[text] = await client.count_tokens(model.model_id, as_read(text))
        return counted[text]

    async def document_budget() -> int:
        if instruction is not None:
            prompt_tokens = await count(query) + (await count(instruction) if instruction else 0)
            if prompt_tokens > contract.limits.max_query_tokens:
                raise BudgetError(
                    f"The query and instruction are {prompt_tokens:,} tokens; the server takes at most "
                    f"{contract.limits.max_query_tokens:,}. Shorten them."
                )
            window = model.max_model_len - prompt_tokens - contract.template_tokens
            return min(window, contract.limits.max_doc_tokens)
        query_tokens = await count(query)
        if query_tokens > model.max_model_len:
            raise BudgetError(
                f"The query is {query_tokens:,} tokens; the model's window is {model.max_model_len:,}. Shorten it."
            )
        return model.max_model_len

    async def score(texts: Sequence[str]) -> RerankAnswer:
        return await client.rerank(model.model_id, query, texts, instruction=instruction)

    passages: list[Passage] = []
    scores: list[float] = []
    tokens = 0
    budget: int | None = None
    for start in range(0, len(documents), batch_size):
        batch = documents[start : start + batch_size]
        try:
            answer = await score(batch)
        except PromptTooLong:
            budget = budget if budget is not None else await document_budget()
            specials = await count("")
            while True:
                pieces = await document_passages(batch, budget, specials, count)
                split = [Passage(start + p.document, p.number, p.count, p.text) for p in pieces]
                try:
                    answers = [
                        await score([p.text for p in split[first : first + batch_size]])
                        for first in range(0, len(split), batch_size)
                    ]
                    break
                except PromptTooLong:
                    # The server's template can make a text longer than /tokenize counts it
                    # (it neutralises control-token strings into several tokens): halve and retry.
                    if budget <= MIN_BUDGET:
                        message = "These documents do not fit the model's window even in short passages."
                        raise BudgetError(message) from None
                    budget //= 2
            passages.extend(split)
            scores.extend(score for answer in answers for score in answer.scores)
            tokens += sum(answer.prompt_tokens for answer in answers)
            continue
        passages.extend(Passage(start + i, 1, 1, text) for i, text in enumerate(batch))
        scores.extend(answer.scores)
        tokens += answer.prompt_tokens
    ranked = best_passages(passages, scores, documents)
    split_count = sum(1 for item in ranked if item.passage.count > 1)
    return RankingOutcome(
        ranked=ranked, prompt_tokens=tokens, long_documents=split_count, budget=budget or model.max_model_len
    )
