"""Deterministic queries and documents of a chosen token length.

Every request gets its own query, so nothing beyond the shared system prompt and
instruction is served from vLLM's prefix cache across requests; within a request every
pair shares the query, as in real reranking. Documents are random English words cut to
exactly `doc_tokens` tokens of the model's tokenizer (decoding may move the count by a
token or two).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

_WORD_LIST = (
    "the of and to in is was for that with as on by at from his an were are which this be has or had "
    "first one their its new after but who not they have her she two been other when there all during "
    "into school time may years more most only over city some world would where later up such used many "
    "can state about national out known university united then made also team film season played "
    "american south north west east river water market energy policy study model network data system "
    "report history music football government company county village population family series album "
    "church war group number area species between three under while since year part both held based "
    "same following high including because through around however several well each life work before "
    "second early called like four against people public back long within along being these them among "
    "release record game line end party council final became could single members club house written "
    "law power science research health court children century small large great former main general"
)
WORDS = tuple(_WORD_LIST.split())


@dataclass(frozen=True)
class RerankJob:
    query: str
    documents: tuple[str, ...]


def _words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def make_jobs(tokenizer: Any, count: int, docs: int, doc_tokens: int, seed: int) -> list[RerankJob]:
    """`count` requests of `docs` documents of about `doc_tokens` tokens each."""
    rng = random.Random(seed)
    jobs = []
    for index in range(count):
        query = f"request {seed}-{index}: " + _words(rng, 12) + "?"
        raw = [_words(rng, doc_tokens) for _ in range(docs)]  # a word is at least one token
        ids = tokenizer(raw, add_special_tokens=False)["input_ids"]
        cut = tokenizer.batch_decode([row[:doc_tokens] for row in ids])
        jobs.append(RerankJob(query=query, documents=tuple(text.strip() for text in cut)))
    return jobs
