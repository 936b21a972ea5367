"""What the server and the page must agree on, defined once.

    from server.contract import DEFAULT_INSTRUCTION, Limits, neutralise_control_tokens

Both sides import this module, and it imports nothing beyond the standard library, so the
page can use it on a host that has no vLLM (a page-only install). The page still reaches the
*running* server only over HTTP: what differs between servers (which scorer it serves, the
limits it was planned for) the server publishes at `CONTRACT_PATH` (server/contract_route.py),
and the page reads it from there with `ServedContract.from_json`, never from a model name.

Why a shared module plus a route, rather than only asking the server: the default instruction,
the template's fixed size and the neutralising rule are properties of the prompt template this
repository ships (server/templates/qwen3_reranker.jinja; tests/test_server_template.py renders
it and proves each one), so they have one home here; the scorer and limits belong to the
server that was started, so the page learns them from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

DEFAULT_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
"""The model card's default task; the Jinja template falls back to the same words."""

TEMPLATE_TOKENS = 64
"""Tokens of the Qwen3 score template around query, instruction and document (system prompt,
role markers, tags, the empty think block): 62 with the real Qwen3 tokenizer, plus 2 for
tokens that may merge differently across the joins. The memory plan adds it to every pair."""

CONTRACT_PATH = "/rerank/contract"
"""Where a server started by `python -m server serve` publishes its `ServedContract`."""

ZERO_WIDTH_SPACE = "\u200b"

CONTROL_PREFIXES = ("<|", "<think>", "</think>", "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>")
"""Every Qwen3 added token starts with one of these: the 20 `<|...|>` tokens and the six
tag-like ones. Breaking the prefix breaks the token."""


def neutralise_control_tokens(text: str) -> str:
    """Insert a zero-width space after the "<" of every control-token string.

    The Jinja template applies the same rule to query, instruction and document, so this is
    the text the model reads: the page counts tokens on it, tests compare scores with it.
    """
    for prefix in CONTROL_PREFIXES:
        text = text.replace(prefix, "<" + ZERO_WIDTH_SPACE + prefix[1:])
    return text


class Scorer(StrEnum):
    """How the served model turns a query and a document into a score."""

    QWEN3_YES_NO = "qwen3-yes-no"
    """One prompt (the Qwen3 template) holds instruction, query and document; score = P(yes)."""
    EMBEDDING_COSINE = "embedding-cosine"
    """An embedding model: vLLM embeds query and document apart and scores their cosine
    similarity, so a document's vector does not depend on the query and a client may keep it."""
    PLAIN = "plain"
    """vLLM's own rerank of the model as it is, whatever that model is (a vLLM not started by
    this project): the page sends every pair to /v1/rerank."""


@dataclass(frozen=True)
class Limits:
    """What one request may contain: the server is planned for it, the page enforces it."""

    max_docs: int = 1000
    """Documents (or passages) per request: bounds the sequences one request puts in flight."""
    max_doc_tokens: int = 1024
    """Tokens of one document or passage: the page splits longer documents into passages."""
    max_query_tokens: int = 256
    """Tokens of query plus instruction: the page refuses a longer query in one line."""


@dataclass(frozen=True)
class ServedContract:
    """What a running server promises its clients; the page reads it from `CONTRACT_PATH`."""

    scorer: Scorer = Scorer.PLAIN
    """PLAIN when the server publishes nothing (a vLLM not started by this project)."""
    limits: Limits = field(default_factory=Limits)
    template_tokens: int = TEMPLATE_TOKENS
    default_instruction: str = DEFAULT_INSTRUCTION
    priority_scheduling: bool = False
    """True: the engine runs `--scheduling-policy priority`, so requests may carry vLLM's
    `priority` field (lower first); any other engine refuses a priority other than 0."""
    published: bool = False
    """False: the server publishes no contract and these are the page's assumptions."""

    @property
    def takes_instruction(self) -> bool:
        return self.scorer is Scorer.QWEN3_YES_NO

    @property
    def embeds_apart(self) -> bool:
        """Query and document are embedded apart: a document's vector can be kept and reused."""
        return self.scorer is Scorer.EMBEDDING_COSINE

    def instruction_for(self, typed: str) -> str | None:
        """What a request's `instruction` should be: the analyst's words, else the default;
        None for a scorer that takes none."""
        if not self.takes_instruction:
            return None
        return typed.strip() or self.default_instruction

    def to_json(self) -> dict[str, Any]:
        body = asdict(self)
        body["scorer"] = self.scorer.value
        del body["published"]
        return body

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> ServedContract:
        """Parse what the server published; ValueError (one line) when it is not a contract."""
        try:
            limits = body["limits"]
            return cls(
                scorer=Scorer(body["scorer"]),
                limits=Limits(
                    max_docs=int(limits["max_docs"]),
                    max_doc_tokens=int(limits["max_doc_tokens"]),
                    max_query_tokens=int(limits["max_query_tokens"]),
                ),
                template_tokens=int(body["template_tokens"]),
                default_instruction=str(body["default_instruction"]),
                # Optional: a server of an earlier release publishes no such key.
                priority_scheduling=body.get("priority_scheduling", False) is True,
                published=True,
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"not a rerank contract ({type(error).__name__}: {error})") from None
