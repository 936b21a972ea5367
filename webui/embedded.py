"""Scoring with an embedding model (the contract's `embedding-cosine` scorer, the bundled MiniLM).

vLLM's /v1/rerank for an embedding model embeds the query and every document apart and
returns their cosine similarity. A document's vector never depends on the query, so the page
asks /v1/embeddings only for the passages it has not embedded yet (in the same token-bounded
batches, priorities and progress as a rerank), keeps their vectors in the prepared cache beside
the split, and scores each query with one embedding of the query and a cosine here. A later
query over the same documents costs one short server call instead of every passage again.

The vectors are the server's own (the same model, pooling and normalisation as its rerank);
only the cosine moves from the server to the page, in float64.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from webui.batches import Progress, plan_batches, run_batches
from webui.client import EmbeddingAnswer, ModelInfo, RerankClient
from webui.passages import Passage
from webui.prepared import ENTRY_BYTES, Preparer, text_bytes


@dataclass(frozen=True)
class VectorScores:
    scores: list[float]
    """One per passage, in passage order."""
    prompt_tokens: int
    """Tokens the server embedded for this job: the query, and passages not seen before."""
    batches: int
    reused: int
    """Passages not sent: their vectors were kept from an earlier job, or are an identical
    document's of this one."""


def cosine(query: np.ndarray, vectors: np.ndarray) -> list[float]:
    """Cosine similarity of each row of `vectors` with `query`, as torch's cosine_similarity
    computes it (dot product over the product of the norms, floored at 1e-8)."""
    q = query.astype(np.float64)
    rows = vectors.astype(np.float64)
    norms = np.maximum(np.linalg.norm(rows, axis=1) * np.linalg.norm(q), 1e-8)
    return [float(value) for value in rows @ q / norms]


async def vector_scores(
    client: RerankClient,
    model: ModelInfo,
    preparer: Preparer,
    query: str,
    passages: Sequence[Passage],
    documents: Sequence[str],
    *,
    budget: int,
    batch_tokens: int,
    max_docs: int,
    on_progress: Progress,
) -> VectorScores:
    """Scores of `passages` (from preparer.passages(documents), cut for `budget`)."""
    cache = preparer.cache
    by_document: dict[int, list[Passage]] = {}
    for passage in passages:
        by_document.setdefault(passage.document, []).append(passage)

    def key(position: int) -> tuple[object, ...]:
        return ("vectors", preparer.model_key, budget, documents[position])

    known: dict[int, np.ndarray] = {}
    same_as: dict[int, int] = {}
    """A document whose text an earlier position already has: its vectors are that one's."""
    first_of: dict[str, int] = {}
    for position in by_document:
        if documents[position] in first_of:
            same_as[position] = first_of[documents[position]]
            continue
        first_of[documents[position]] = position
        found = cache.get(key(position))
        if isinstance(found, np.ndarray) and len(found) == len(by_document[position]):
            known[position] = found
    missing = [
        p for position, group in by_document.items() if position not in known and position not in same_as for p in group
    ]
    reused = len(passages) - len(missing)
    on_progress(reused, len(passages))

    # Each text is embedded alone: a passage costs its own tokens, nothing per pair. The query
    # rides with the first batch (on top of its bound: a query is at most one window), so a
    # small job is one call, one wait behind a long job's step.
    batches = plan_batches(missing, 0, batch_tokens, max_docs)

    async def embed(index: int, batch: Sequence[Passage]) -> EmbeddingAnswer:
        texts = [p.text for p in batch] if index else [query, *(p.text for p in batch)]
        priority = index if model.contract.priority_scheduling else None
        return await client.embed(model.model_id, texts, priority=priority, query=query)

    if batches:
        answers = await run_batches(batches, embed, on_progress, done_before=reused, total=len(passages))
    else:
        answers = [await embed(0, [])]
    query_row, *first_rows = answers[0].vectors
    query_vector = np.asarray(query_row, dtype=np.float32)
    fetched = iter([*first_rows, *(row for answer in answers[1:] for row in answer.vectors)])
    for position, group in by_document.items():
        if position in known or position in same_as:
            continue
        rows = np.asarray([next(fetched) for _ in group], dtype=np.float32)
        known[position] = rows
        cache.put(key(position), rows, ENTRY_BYTES + text_bytes(documents[position]) + rows.nbytes)
    for position, first in same_as.items():
        known[position] = known[first]

    scores = cosine(query_vector, np.stack([known[p.document][p.number - 1] for p in passages])) if passages else []
    tokens = sum(answer.prompt_tokens for answer in answers)
    return VectorScores(scores, tokens, len(batches), reused)
