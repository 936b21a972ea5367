"""One Rerank job: documents prepared (webui/prepared.py), their passages scored in batches
bounded by tokens (webui/batches.py), each document ranked by its best passage.

Two ways to score, chosen by the server's contract: pairs through /v1/rerank (a Qwen3 yes/no
scorer, or any model a plain vLLM serves), or, for an embedding model, passage vectors kept
between queries and a cosine on the page (webui/embedded.py).

Why priorities: when the server runs `--scheduling-policy priority` (its contract says so),
each batch carries vLLM's `priority` = how many batches its job has already sent (lower runs
first). A job that has just started goes ahead of the later batches of a long one, and two
long jobs take turns; the engine still fills every step with what waits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from webui.batches import Progress, plan_batches, run_batches
from webui.client import ModelInfo, RerankAnswer, RerankClient
from webui.embedded import vector_scores
from webui.passages import Passage, ScoredDocument, best_passages
from webui.prepared import PreparedCache, Preparer


@dataclass(frozen=True)
class RankingOutcome:
    ranked: list[ScoredDocument]
    prompt_tokens: int
    long_documents: int
    """How many documents were longer than the window and were split into passages."""
    budget: int
    passages: int
    batches: int
    reused: int = 0
    """Passages whose vectors the page already had, from an earlier query or an identical
    document of this one (embedding models only)."""


async def score_batches(
    client: RerankClient,
    model: ModelInfo,
    query: str,
    batches: Sequence[Sequence[Passage]],
    *,
    instruction: str | None,
    on_progress: Progress,
) -> tuple[list[float], int]:
    """(a score per passage in batch order, prompt tokens the server counted)."""

    async def rerank(index: int, batch: Sequence[Passage]) -> RerankAnswer:
        return await client.rerank(
            model.model_id,
            query,
            [passage.text for passage in batch],
            instruction=instruction,
            priority=index if model.contract.priority_scheduling else None,
        )

    answers = await run_batches(batches, rerank, on_progress)
    return [score for answer in answers for score in answer.scores], sum(a.prompt_tokens for a in answers)


async def rank_documents(
    client: RerankClient,
    model: ModelInfo,
    cache: PreparedCache,
    query: str,
    documents: Sequence[str],
    *,
    instruction: str | None,
    batch_tokens: int,
    max_docs: int,
    on_progress: Progress = lambda done, total: None,
) -> RankingOutcome:
    """Score documents; split what is too long; keep each document's best passage.

    `instruction` is None for a scorer that takes none. Documents already prepared by any
    earlier job of this page process cost no server call before scoring.
    """
    preparer = Preparer(client, model, cache, parallel=client.limits.max_connections or 1)
    prompt_tokens = await preparer.prompt_tokens(query, instruction)
    passages, budget = await preparer.passages(documents)
    if model.contract.embeds_apart:
        found = await vector_scores(
            client, model, preparer, query, passages, documents,
            budget=budget, batch_tokens=batch_tokens, max_docs=max_docs, on_progress=on_progress,
        )  # fmt: skip
        scores, tokens, batches, reused = found.scores, found.prompt_tokens, found.batches, found.reused
    else:
        pair_overhead = prompt_tokens + (model.contract.template_tokens if instruction is not None else 0)
        planned = plan_batches(passages, pair_overhead, batch_tokens, max_docs)
        on_progress(0, len(passages))
        scores, tokens = await score_batches(
            client, model, query, planned, instruction=instruction, on_progress=on_progress
        )
        batches, reused = len(planned), 0
    ranked = best_passages(passages, scores, documents)
    return RankingOutcome(
        ranked=ranked,
        prompt_tokens=tokens,
        long_documents=sum(1 for item in ranked if item.passage.count > 1),
        budget=budget,
        passages=len(passages),
        batches=batches,
        reused=reused,
    )
