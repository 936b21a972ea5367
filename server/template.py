"""The Qwen3 reranker prompt template and the neutralising of control-token strings.

The jinja file is what vLLM renders (passed with --chat-template), so every client,
curl included, gets correctly templated pairs. `neutralise` is the same rule in Python,
for code that wants to show or compare the text the model actually reads; a test keeps
the two in step.
"""

from __future__ import annotations

from pathlib import Path

TEMPLATE_PATH = Path(__file__).parent / "templates" / "qwen3_reranker.jinja"

DEFAULT_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
"""The model card's default task."""

ZERO_WIDTH_SPACE = "\u200b"

CONTROL_PREFIXES = ("<|", "<think>", "</think>", "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>")
"""Every Qwen3 added token starts with one of these: the 20 `<|...|>` tokens and the
six tag-like ones. Breaking the prefix breaks the token."""


def neutralise(text: str) -> str:
    """Insert a zero-width space after the "<" of every control-token string."""
    for prefix in CONTROL_PREFIXES:
        text = text.replace(prefix, "<" + ZERO_WIDTH_SPACE + prefix[1:])
    return text
