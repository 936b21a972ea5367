"""Documents prepared once per page process: each text's passage split and token counts, kept
in a byte-bounded LRU that every viewer shares and every later query reuses.

    cache = PreparedCache(max_bytes=64 << 20)          # one per page process
    preparer = Preparer(client, model, cache, parallel=4)
    passages = await preparer.passages(documents)      # later queries: no server call at all

A document's passages depend only on its text, the token budget and the served model's
tokenizer, never on the query: the budget is what the window leaves after the *largest*
query and instruction the page accepts (`document_budget`), the same for every query. On a
server this project starts, that is exactly the contract's max_doc_tokens (the memory plan
sizes max_model_len as template + max_query_tokens + max_doc_tokens).

Texts are counted as the server will read them: a Qwen3 template neutralises control-token
strings first, so the neutralised text is what /tokenize counts, and a passage that was
counted within the budget is never refused. A text proved to fit without a server call (a
token covers at least one UTF-8 byte, so n bytes make at most n + specials tokens, `specials`
being what the tokenizer adds to an empty text) is not counted. The counts that are needed
are taken concurrently, at most `parallel` at once (the page's HTTP pool).
"""

from __future__ import annotations

import asyncio
import sys
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from server.contract import neutralise_control_tokens
from webui.client import ModelInfo, RerankClient
from webui.passages import BudgetError, Passage, window_spans

T = TypeVar("T")
TokenCounter = Callable[[str], Coroutine[Any, Any, int]]

BYTES_PER_TOKEN = 4
"""Estimate for texts that fit without a count (English's usual ratio); it only sizes batches."""
MAX_EXPANSION = 3
"""Neutralising turns the 2 bytes "<|" into 5: a window of raw bytes <= provable / 3 is
provably within the budget however many control strings it holds, so shrinking ends."""
ENTRY_BYTES = 200
"""What one cache entry costs beyond its text (key tuple, dict slot, value object)."""
SPAN_BYTES = 120
"""What one passage costs in an entry: a span and a token count, not a copy of the text."""


@dataclass(frozen=True)
class Split:
    """A document's passages as spans into its text (the text itself is kept once, in the key)."""

    spans: tuple[tuple[int, int], ...]
    tokens: tuple[int, ...]
    """Per passage: counted tokens, or a bytes-based estimate for a passage that provably fits."""

    def texts(self, text: str) -> list[str]:
        return [text[start:end] for start, end in self.spans]


class PreparedCache:
    """A least-recently-used map bounded by the bytes it holds, texts included: nothing is
    kept beyond `max_bytes`, and an entry larger than the whole bound is not kept at all."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable) -> Any | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        return entry[0]

    def put(self, key: Hashable, value: Any, size: int) -> None:
        if key in self._entries:
            self.bytes -= self._entries.pop(key)[1]
        if size > self.max_bytes:
            return
        self._entries[key] = (value, size)
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, (_, dropped) = self._entries.popitem(last=False)
            self.bytes -= dropped


def text_bytes(text: str) -> int:
    """What a str really occupies in this process (1, 2 or 4 bytes a character, plus header)."""
    return sys.getsizeof(text)


def document_budget(model: ModelInfo) -> int:
    """Tokens one document (or passage) may have, whatever the query.

    A plain scorer (MiniLM) embeds each text alone: the model's window. A Qwen3 scorer puts
    query, instruction and document in one prompt: the window less the longest query and
    instruction the page accepts and the template, at most the contract's max_doc_tokens.
    """
    contract = model.contract
    if not contract.takes_instruction:
        return model.max_model_len
    room = model.max_model_len - contract.limits.max_query_tokens - contract.template_tokens
    budget = min(room, contract.limits.max_doc_tokens)
    if budget < 1:
        raise BudgetError(
            f"The server's window of {model.max_model_len:,} tokens leaves no room for documents after "
            f"a query of up to {contract.limits.max_query_tokens:,} tokens; restart it with a larger window."
        )
    return budget


def estimate_tokens(read_bytes: int, specials: int) -> int:
    return -(-read_bytes // BYTES_PER_TOKEN) + specials


async def all_of(calls: Sequence[Coroutine[Any, Any, T]]) -> list[T]:
    """Run calls concurrently; the first failure cancels the rest and is raised as itself.
    Cancelling the caller cancels every call still running (asyncio.TaskGroup)."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(call) for call in calls]
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0] from None
    return [task.result() for task in tasks]


async def split_document(
    text: str, budget: int, specials: int, count: TokenCounter, as_read: Callable[[str], str] = str
) -> Split:
    """The document whole if it fits the budget, else overlapping windows that each fit.

    `count` counts a text as the server reads it; `as_read` is that reading (neutralising),
    used to prove a text fits from its bytes alone. A window counted over the budget is cut
    again on its own (its neighbours stay as they are, each counted once), so a long document
    costs about one count per passage.
    """
    provable = budget - specials
    if provable < 1:
        raise BudgetError("The model's window leaves no room for documents; shorten the query.")
    whole_bytes = len(as_read(text).encode("utf-8"))
    if whole_bytes <= provable:
        return Split(((0, len(text)),), (estimate_tokens(whole_bytes, specials),))
    total = await count(text)
    if total <= budget:
        return Split(((0, len(text)),), (total,))
    pieces = await _windows_within(text, 0, len(text), total, budget, specials, count, as_read)
    return Split(tuple(span for span, _ in pieces), tuple(tokens for _, tokens in pieces))


async def _windows_within(
    text: str,
    start: int,
    end: int,
    tokens: int,
    budget: int,
    specials: int,
    count: TokenCounter,
    as_read: Callable[[str], str],
) -> list[tuple[tuple[int, int], int]]:
    """Windows of text[start:end] (counted at `tokens`, over the budget), each within it.

    The width starts from this piece's own bytes per token, a little under; a window still
    over the budget is cut again the same way. A window of at most provable / MAX_EXPANSION
    raw bytes provably fits, so the cutting ends.
    """
    provable = budget - specials
    floor = max(1, provable // MAX_EXPANSION)
    piece = text[start:end]
    width = max(floor, int(0.9 * budget * len(piece.encode("utf-8")) / tokens))
    spans = [(start + left, start + right) for left, right in window_spans(piece, width)]
    if len(spans) == 1 and width <= floor:
        raise BudgetError("A document does not fit the model's window even in short passages.")
    sizes = [len(as_read(text[left:right]).encode("utf-8")) for left, right in spans]
    unproven = [index for index, size in enumerate(sizes) if size > provable]
    counted = dict(zip(unproven, await all_of([count(text[slice(*spans[index])]) for index in unproven]), strict=True))
    over = [index for index in unproven if counted[index] > budget]
    again = await all_of(
        [_windows_within(text, *spans[index], counted[index], budget, specials, count, as_read) for index in over]
    )
    recut = dict(zip(over, again, strict=True))
    pieces: list[tuple[tuple[int, int], int]] = []
    for index, span in enumerate(spans):
        if index in recut:
            pieces.extend(recut[index])
        else:
            pieces.append((span, counted.get(index, estimate_tokens(sizes[index], specials))))
    return pieces


class Preparer:
    """One job's view of the shared cache: token counts through the page's client, at most
    `parallel` calls at once, each result kept for every later job."""

    def __init__(self, client: RerankClient, model: ModelInfo, cache: PreparedCache, parallel: int) -> None:
        self.client = client
        self.model = model
        self.cache = cache
        self._gate = asyncio.Semaphore(max(1, parallel))
        self._as_read: Callable[[str], str] = neutralise_control_tokens if model.contract.takes_instruction else str
        # Another model, window or scorer reads texts differently: nothing is shared with it.
        self.model_key = (model.model_id, model.max_model_len, model.contract.scorer.value)

    async def _count_now(self, text: str) -> int:
        async with self._gate:
            return await self.client.count_tokens(self.model.model_id, self._as_read(text))

    async def count(self, text: str) -> int:
        """Tokens of a text as the server reads it, remembered (queries, instructions, "")."""
        key = ("count", self.model_key, text)
        known = self.cache.get(key)
        if known is None:
            known = await self._count_now(text)
            self.cache.put(key, known, ENTRY_BYTES + text_bytes(text))
        return int(known)

    async def prompt_tokens(self, query: str, instruction: str | None) -> int:
        """Tokens of query and instruction, refused in one line when the server would refuse
        them. Texts short enough to fit by their bytes alone are estimated, not counted, so a
        new short query costs no server call."""
        texts = [query] if not instruction else [query, instruction]
        limit = self.model.max_model_len if instruction is None else self.model.contract.limits.max_query_tokens
        specials = await self.count("")
        sizes = [len(self._as_read(text).encode("utf-8")) for text in texts]
        if sum(sizes) + specials * len(texts) <= limit:
            return sum(estimate_tokens(size, specials) for size in sizes)
        tokens = sum(await all_of([self.count(text) for text in texts]))
        if tokens <= limit:
            return tokens
        if instruction is None:
            raise BudgetError(f"The query is {tokens:,} tokens; the model's window is {limit:,}. Shorten it.")
        raise BudgetError(
            f"The query and instruction are {tokens:,} tokens; the server takes at most {limit:,}. Shorten them."
        )

    async def split(self, text: str, budget: int, specials: int) -> Split:
        key = ("split", self.model_key, budget, text)
        known = self.cache.get(key)
        if isinstance(known, Split):
            return known
        split = await split_document(text, budget, specials, self._count_now, self._as_read)
        self.cache.put(key, split, ENTRY_BYTES + text_bytes(text) + SPAN_BYTES * len(split.spans))
        return split

    async def passages(self, documents: Sequence[str]) -> tuple[list[Passage], int]:
        """(every document's passages in document order, the budget they were cut for)."""
        budget = document_budget(self.model)
        specials = await self.count("")
        distinct = list(dict.fromkeys(documents))
        found = await all_of([self.split(text, budget, specials) for text in distinct])
        splits = dict(zip(distinct, found, strict=True))
        passages = []
        for position, text in enumerate(documents):
            split = splits[text]
            count = len(split.spans)
            for number, (piece, tokens) in enumerate(zip(split.texts(text), split.tokens, strict=True), 1):
                passages.append(Passage(position, number, count, piece, tokens))
        return passages, budget
