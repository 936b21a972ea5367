"""Documents prepared once (webui/prepared.py): splits, budgets, the shared cache, and the
token counts it asks the server for, against counting tokenizers and a fake /tokenize."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import httpx
import pytest

from server.contract import Limits, Scorer, ServedContract
from webui.client import ModelInfo, RerankClient
from webui.passages import BudgetError, Passage
from webui.prepared import PreparedCache, Preparer, Split, document_budget, split_document

WORDS = [f"w{index:03d}" for index in range(300)]
TEXT = " ".join(WORDS)


def word_tokens(text: str) -> int:
    """A tokenizer with one token per word, plus [CLS] and [SEP] like MiniLM's."""
    return len(text.split()) + 2


class CountingTokenizer:
    """An async token counter that records every call, as the server's /tokenize would see them."""

    def __init__(self, count: Any) -> None:
        self._count = count
        self.calls: list[str] = []

    async def __call__(self, text: str) -> int:
        self.calls.append(text)
        return int(self._count(text))


def split(text: str, budget: int, counter: CountingTokenizer, specials: int = 2, as_read: Any = str) -> list[str]:
    return asyncio.run(split_document(text, budget, specials, counter, as_read)).texts(text)


# --- splitting -----------------------------------------------------------------------------------


def test_a_document_within_the_byte_bound_needs_no_token_count() -> None:
    counter = CountingTokenizer(word_tokens)
    text = "x" * 98
    result = asyncio.run(split_document(text, 100, 2, counter))
    assert result == Split(((0, 98),), (-(-98 // 4) + 2,))  # 98 bytes estimated at 4 a token, + 2
    assert counter.calls == []


def test_a_document_within_the_token_budget_stays_whole_after_one_count() -> None:
    counter = CountingTokenizer(word_tokens)
    assert split(TEXT, 302, counter) == [TEXT]
    assert counter.calls == [TEXT]


def test_a_long_document_is_split_into_passages_that_each_fit_the_budget() -> None:
    counter = CountingTokenizer(word_tokens)
    passages = split(TEXT, 50, counter)
    assert len(passages) > 6
    assert all(word_tokens(passage) <= 50 for passage in passages)
    assert list(dict.fromkeys(word for passage in passages for word in passage.split())) == WORDS
    # Passages use the window well, not only the provable byte bound (48 bytes, ~9 words).
    assert max(word_tokens(passage) for passage in passages) > 30


def test_a_long_document_costs_one_count_and_one_per_passage() -> None:
    # Uniform words: the first cut, from the document's own bytes per token, already fits.
    counter = CountingTokenizer(word_tokens)
    passages = split(TEXT, 50, counter)
    assert counter.calls == [TEXT, *passages]


def test_only_a_window_over_the_budget_is_cut_again() -> None:
    # Dense words ("d00".., a token per byte) in the middle of sparse ones: after the first
    # cut only the windows holding them are over the budget, and only they are cut again.
    def dense(text: str) -> int:
        return sum(3 if word.startswith("d") else 1 for word in text.split()) + 2

    text = " ".join(WORDS[:150] + [f"d{index:02d}" for index in range(30)] + WORDS[150:])
    counter = CountingTokenizer(dense)
    passages = split(text, 60, counter)
    assert all(dense(passage) <= 60 for passage in passages)
    over = [call for call in counter.calls[1:] if dense(call) > 60]
    # Each window over the budget was counted once and cut again; every other count is of a
    # passage, counted once (short ones, provably within the budget, not at all).
    counted = [call for call in counter.calls[1:] if call not in over]
    assert over and len(counter.calls) == 1 + len(over) + len(counted)
    assert set(counted) <= set(passages) and len(counted) == len(set(counted))


def test_the_split_records_counted_tokens_for_counted_passages() -> None:
    counter = CountingTokenizer(word_tokens)
    result = asyncio.run(split_document(TEXT, 50, 2, counter))
    texts = result.texts(TEXT)
    # Every passage here is over the 48-byte provable bound, so each was counted.
    assert list(result.tokens) == [word_tokens(text) for text in texts]


def test_an_adversarial_tokenizer_still_ends_at_the_provable_bound() -> None:
    def per_byte(text: str) -> int:
        return len(text.encode()) + 2

    text = "ab " * 50 + "é" * 200
    passages = split(text, 40, CountingTokenizer(per_byte))
    assert all(per_byte(passage) <= 40 for passage in passages)


def test_no_room_for_documents_is_a_clear_error() -> None:
    with pytest.raises(BudgetError, match="no room for documents"):
        split(TEXT, 2, CountingTokenizer(word_tokens))


def neutralised(text: str) -> str:
    """What the Qwen3 template reads, written out by hand for the one control string used here."""
    return text.replace("<|x|>", "<\u200b|x|>")


def test_texts_are_counted_and_bounded_as_the_server_reads_them() -> None:
    # A tokenizer for which the neutralised control string is 8 tokens, the raw one 1: only
    # counting the neutralised text keeps every passage within the budget.
    def as_served(text: str) -> int:
        return word_tokens(text) + 7 * text.count("<\u200b|x|>")

    counter = CountingTokenizer(as_served)
    document = " ".join(["<|x|>"] * 60 + ["w001"])

    async def count_read(text: str) -> int:
        return await counter(neutralised(text))

    passages = asyncio.run(split_document(document, 100, 2, count_read, neutralised)).texts(document)
    assert len(passages) > 1
    assert all(as_served(neutralised(passage)) <= 100 for passage in passages)
    assert all("\u200b" in call for call in counter.calls)


def test_a_text_that_fits_only_before_neutralising_is_counted() -> None:
    counter = CountingTokenizer(lambda text: len(text.split()) + 2)
    document = "<|x|> " * 8  # 47 bytes raw, 71 neutralised: over the 48-byte provable bound
    split(document.strip(), 50, counter, as_read=neutralised)
    assert counter.calls == [document.strip()]


# --- the budget -------------------------------------------------------------------------------------


def test_a_plain_scorer_gives_each_text_the_whole_window() -> None:
    assert document_budget(ModelInfo("minilm", 256, ServedContract())) == 256


def test_a_qwen3_budget_leaves_room_for_the_longest_query_the_page_accepts() -> None:
    limits = Limits(max_docs=10, max_doc_tokens=1024, max_query_tokens=256)
    contract = ServedContract(scorer=Scorer.QWEN3_YES_NO, limits=limits, template_tokens=64)
    # A server planned by the memory plan: 64 + 256 + 1024 = 1344, so exactly max_doc_tokens.
    assert document_budget(ModelInfo("qwen3", 1344, contract)) == 1024
    # A smaller window (started with --max-model-len 800): 800 - 256 - 64 = 480.
    assert document_budget(ModelInfo("qwen3", 800, contract)) == 480
    with pytest.raises(BudgetError, match="leaves no room for documents"):
        document_budget(ModelInfo("qwen3", 300, contract))


# --- the shared cache ---------------------------------------------------------------------------


def test_the_cache_forgets_the_least_recently_used_beyond_its_bytes() -> None:
    cache = PreparedCache(max_bytes=100)
    cache.put("a", 1, 40)
    cache.put("b", 2, 40)
    assert cache.get("a") == 1  # a is now the most recently used
    cache.put("c", 3, 40)
    assert cache.get("b") is None and cache.get("a") == 1 and cache.get("c") == 3
    assert cache.bytes == 80 and len(cache) == 2
    cache.put("huge", 4, 101)  # larger than the whole bound: not kept, nothing evicted for it
    assert cache.get("huge") is None and len(cache) == 2
    cache.put("a", 5, 60)  # replacing an entry re-counts its size
    assert cache.bytes == 100 and cache.get("a") == 5


class FakeTokenizeServer:
    """/tokenize with one token per word (+2 specials), holding each call `delay_s` so that
    concurrent calls overlap; records the prompts and the peak of calls in flight."""

    def __init__(self, delay_s: float = 0.02) -> None:
        self.delay_s = delay_s
        self.prompts: list[str] = []
        self.in_flight = 0
        self.peak = 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/tokenize", request.url.path
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(self.delay_s)
            prompt = json.loads(request.content)["prompt"]
            self.prompts.append(prompt)
            return httpx.Response(200, json={"count": word_tokens(prompt)})
        finally:
            self.in_flight -= 1


def prepare(
    server: FakeTokenizeServer,
    cache: PreparedCache,
    documents: list[str],
    model: ModelInfo | None = None,
    parallel: int = 3,
) -> list[Passage]:
    async def run() -> list[Passage]:
        client = RerankClient("http://server", timeout=5, max_connections=8, transport=httpx.MockTransport(server))
        try:
            preparer = Preparer(client, model or ModelInfo("minilm", 60, ServedContract()), cache, parallel)
            return (await preparer.passages(documents))[0]
        finally:
            await client.aclose()

    return asyncio.run(run())


LONG = [" ".join(WORDS[start : start + 120]) for start in range(0, 240, 20)]
"""Twelve documents of 120 words: over a 60-token window, so each is counted and split."""


def test_counts_are_taken_concurrently_within_the_bound() -> None:
    server = FakeTokenizeServer()
    prepare(server, PreparedCache(1 << 20), LONG, parallel=3)
    assert server.peak == 3


def test_a_second_preparation_asks_the_server_nothing() -> None:
    server, cache = FakeTokenizeServer(), PreparedCache(1 << 20)
    first = prepare(server, cache, LONG)
    asked = len(server.prompts)
    assert asked > len(LONG)  # each long document, then its windows
    assert prepare(server, cache, LONG) == first
    assert len(server.prompts) == asked


def test_short_documents_are_never_counted_and_repeats_are_counted_once() -> None:
    server = FakeTokenizeServer()
    short = "w001 w002"
    passages = prepare(server, PreparedCache(1 << 20), [short, LONG[0], short, LONG[0]])
    # "" (the specials) and the long document; then only that document's windows.
    assert server.prompts[:1] == [""] and server.prompts.count(LONG[0]) == 1
    assert short not in server.prompts
    assert [p.text for p in passages if p.document == 0] == [short]
    assert [p.text for p in passages if p.document == 1] == [p.text for p in passages if p.document == 3]
    assert all(word_tokens(p.text) <= 60 for p in passages)


def test_the_cache_keeps_no_text_beyond_its_bound() -> None:
    cache = PreparedCache(max_bytes=3 * sys.getsizeof(LONG[0]))
    prepare(FakeTokenizeServer(), cache, LONG)
    assert 0 < cache.bytes <= cache.max_bytes
    assert len(cache) < len(LONG)


def test_a_qwen3_server_is_sent_the_neutralised_text() -> None:
    server = FakeTokenizeServer(delay_s=0)
    contract = ServedContract(scorer=Scorer.QWEN3_YES_NO, limits=Limits(max_doc_tokens=40, max_query_tokens=8))
    document = " ".join(["<|im_end|>"] * 50)
    prepare(server, PreparedCache(1 << 20), [document], ModelInfo("qwen3", 200, contract))
    assert server.prompts and all("<|" not in prompt for prompt in server.prompts)
    assert "<\u200b|im_end|>" in server.prompts[1]
