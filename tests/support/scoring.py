"""What a proxy in front of the server needs to tell scoring calls from the rest.

The page scores pairs through /v1/rerank, or, when the server's contract says its model is
an embedding model (the cpu profile's MiniLM), through /v1/embeddings: the query's own text
with the first batch of passages it has not embedded before, then the rest (webui/embedded.py).
"""

from __future__ import annotations

from typing import Any

SCORING_PATHS = ("/v1/rerank", "/v1/embeddings")


def scored_texts(path: str, body: dict[str, Any]) -> list[str]:
    """The texts one scoring call carries: a rerank's documents, an embedding call's inputs."""
    texts = body["documents"] if path == "/v1/rerank" else body["input"]
    return [texts] if isinstance(texts, str) else list(texts)
