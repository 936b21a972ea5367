"""Helpers the tests share: real server processes, the tiny Qwen3 reranker, reference scores."""
