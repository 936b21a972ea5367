"""One Rerank job: documents prepared (webui/prepared.py), their passages scored through
/v1/rerank in batches bounded by tokens, each document ranked by its best passage.

Why batches: one call for everything meets the page's timeout once a job is big (950
passages took a 2-core CPU 157-201 s), shows nothing until the end, and cannot be stopped
half way. So a job sends one batch at a time, reports "passages scored / total" after each,
and stops sending the moment it is cancelled (Gradio cancels the handler's task; the call in
flight is dropped with its connection, and no later batch is sent).

Why priorities: when the server runs `--scheduling-policy priority` (its contract says so),
each batch carries vLLM's `priority` = how many batches its job has already had scored
(lower runs first). A job that has just started goes ahead of the later batches of a long
one, and two long jobs take turns; the engine still fills every step with what waits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from webui.client import ModelInfo, RerankClient
from webui.passages import Passage, ScoredDocument, best_passages
from webui.prepared import PreparedCache, Preparer

Progress = Callable[[int, int], None]
"""Called with (passages scored, passages in the job) after each batch."""


@dataclass(frozen=True)
class RankingOutcome:
    ranked: list[ScoredDocument]
    prompt_tokens: int
    long_documents: int
    """How many documents were longer than the window and were split into passages."""
    budget: int
    passages: int
    batches: int


def plan_batches(
    passages: Sequence[Passage], pair_overhead: int, max_tokens: int, max_docs: int
) -> list[list[Passage]]:
    """Consecutive passages, each batch at most `max_docs` passages and `max_tokens` tokens
    (a passage's tokens plus `pair_overhead`, what the server adds to each pair); a passage
    larger than `max_tokens` on its own goes alone."""
    batches: list[list[Passage]] = []
    current: list[Passage] = []
    weight = 0
    for passage in passages:
        cost = passage.tokens + pair_overhead
        if current and (weight + cost > max_tokens or len(current) >= max_docs):
            batches.append(current)
            current, weight = [], 0
        current.append(passage)
        weight += cost
    if current:
        batches.append(current)
    return batches


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
    total = sum(len(batch) for batch in batches)
    scores: list[float] = []
    tokens = 0
    for index, batch in enumerate(batches):
        answer = await client.rerank(
            model.model_id,
            query,
            [passage.text for passage in batch],
            instruction=instruction,
            priority=index if model.contract.priority_scheduling else None,
        )
        scores.extend(answer.scores)
        tokens += answer.prompt_tokens
        on_progress(len(scores), total)
    return scores, tokens


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
    """Score documents through /v1/rerank; split what is too long; keep each document's best.

    `instruction` is None for a plain scorer (it takes none). Documents already prepared by
    any earlier job of this page process cost no server call before scoring.
    """
    preparer = Preparer(client, model, cache, parallel=client.limits.max_connections or 1)
    prompt_tokens = await preparer.prompt_tokens(query, instruction)
    passages, budget = await preparer.passages(documents)
    pair_overhead = prompt_tokens + (model.contract.template_tokens if instruction is not None else 0)
    batches = plan_batches(passages, pair_overhead, batch_tokens, max_docs)
    on_progress(0, len(passages))
    scores, tokens = await score_batches(
        client, model, query, batches, instruction=instruction, on_progress=on_progress
    )
    ranked = best_passages(passages, scores, documents)
    return RankingOutcome(
        ranked=ranked,
        prompt_tokens=tokens,
        long_documents=sum(1 for item in ranked if item.passage.count > 1),
        budget=budget,
        passages=len(passages),
        batches=len(batches),
    )
