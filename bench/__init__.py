"""GPU benchmark of the reranker server against vLLM's defaults (see bench/README.md)."""
