"""Is the server at a URL a reranker, and does it rank sensibly?

`python -m webui --check-server` (and the launcher, once its vLLM is healthy) asks for a
model, reranks a few built-in sets where one document plainly answers the query and the
others plainly do not, and warns in one line when the answer does not come first by a
clear margin. That is the classic silent failure of a reranker deployment: a checkpoint
served without its prompt template, or the wrong model, answers 200 with plausible scores.
"""

from __future__ import annotations

from dataclasses import dataclass

from webui.client import RerankClient, RerankError
from webui.settings import Settings


@dataclass(frozen=True)
class SanityCase:
    query: str
    answer: str
    """The one document that answers the query; any reranker should put it first."""
    others: tuple[str, ...]
    """Documents on unrelated topics that share no words with the query."""


SANITY_CASES = (
    SanityCase(
        "What is the capital of France?",
        "Paris is the capital and largest city of France.",
        ("Bananas are rich in potassium and easy to digest.", "The violin has four strings tuned in fifths."),
    ),
    SanityCase(
        "How many legs does a spider have?",
        "Spiders have eight legs, unlike insects, which have six.",
        ("The stock market closed higher on Tuesday.", "Bake the bread at 220 degrees for thirty minutes."),
    ),
    SanityCase(
        "Who wrote the play Romeo and Juliet?",
        "Romeo and Juliet is a tragedy written by William Shakespeare.",
        ("Glaciers carve deep valleys over thousands of years.", "Charge the battery fully before first use."),
    ),
)

MIN_MARGIN = 0.05
"""How far the answer must score above the best other document, on each case. Real
rerankers leave far more (Qwen3: ~0.9; the bundled MiniLM's cosine: ~0.5); a model served
without its template or a random one lands anywhere, often inverted."""

QWEN3_MIN_TEMPLATE_TOKENS = 20
"""Qwen3-Reranker's prompt adds its system message, instruction and think block (about 60
tokens) to every pair; a pair that costs less than this was sent without the template."""


@dataclass(frozen=True)
class SanityResult:
    worst_margin: float
    """Answer score minus the best other score, on the case where that is smallest."""
    template_tokens: int | None
    """Tokens one pair costs beyond query and document; None where not measured."""

    def warning(self, model_id: str) -> str | None:
        if self.template_tokens is not None and self.template_tokens < QWEN3_MIN_TEMPLATE_TOKENS:
            return (
                f"warning: {model_id} looks like a Qwen3 reranker served without its prompt template "
                f"(a pair costs {self.template_tokens} tokens beyond query and document, the template "
                "adds about 60): its scores are meaningless; serve it with --chat-template (README, Troubleshooting)"
            )
        if self.worst_margin < MIN_MARGIN:
            return (
                f"warning: {model_id} does not rank plainly relevant documents first (margin "
                f"{self.worst_margin:+.2f}, expected at least {MIN_MARGIN}): wrong model or missing template? "
                "(README, Troubleshooting)"
            )
        return None


def looks_like_qwen3(model_id: str, profile_label: str) -> bool:
    return "qwen3" in f"{model_id} {profile_label}".lower()


def one_call_client(settings: Settings) -> RerankClient:
    """A client for a check that makes one call at a time, as the page would make it."""
    return RerankClient(
        settings.server_url,
        timeout=settings.timeout,
        max_connections=1,
        api_key=settings.api_key,
        rerank_path=settings.rerank_path,
    )


async def check_reranker(settings: Settings) -> str:
    """A one-line description of the served model; RerankError with the reason otherwise."""
    client = one_call_client(settings)
    try:
        info = await client.model_info()
        try:
            await client.rerank(info.model_id, "is this a reranker?", ["A reranker gives this pair a score."])
        except RerankError as error:
            raise RerankError(f"{info.model_id} at {settings.server_url} does not rerank: {error}") from None
        return f"{info.model_id} at {settings.server_url} reranks (window {info.max_model_len} tokens)"
    finally:
        await client.aclose()


async def score_sanity(settings: Settings) -> tuple[str, SanityResult]:
    """The served model's id and how it ranks SANITY_CASES (RerankError if it cannot)."""
    client = one_call_client(settings)
    try:
        model_id = (await client.model_info()).model_id
        margins = []
        for case in SANITY_CASES:
            answer = await client.rerank(model_id, case.query, [case.answer, *case.others])
            margins.append(answer.scores[0] - max(answer.scores[1:]))
        template_tokens = None
        if looks_like_qwen3(model_id, settings.profile_label):
            case = SANITY_CASES[0]
            try:
                pair = await client.rerank(model_id, case.query, [case.answer])
                query_tokens = await client.count_tokens(model_id, case.query)
                template_tokens = pair.prompt_tokens - query_tokens - await client.count_tokens(model_id, case.answer)
            except RerankError:
                pass  # no /tokenize behind this URL: the ranking check alone must do
        return model_id, SanityResult(worst_margin=min(margins), template_tokens=template_tokens)
    finally:
        await client.aclose()
