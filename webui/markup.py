"""Text made inert for Gradio's Markdown, in one place: file names, server messages, GPU and
process names are shown literally, whatever characters they hold."""

from __future__ import annotations

import html

MARKDOWN_ACTIVE = "\\`*_{}[]<>#|~"
"""Characters Markdown acts on mid-line (after html.escape, `<` and `>` are entities already)."""


def inline_markdown(text: str) -> str:
    """One line of text, inert for Markdown and HTML: whitespace runs become one space, `<`, `>`
    and `&` become entities, and every character Markdown acts on mid-line is backslash-escaped."""
    line = html.escape(" ".join(text.split()), quote=False)
    return "".join("\\" + char if char in MARKDOWN_ACTIVE else char for char in line)
