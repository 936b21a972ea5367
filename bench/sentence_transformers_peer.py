"""sentence-transformers ranking the same texts on the same cores: the peer `bench.cpu_overhead`
compares vLLM and the page with (run after the server and the page have stopped)."""

from __future__ import annotations

import time
from typing import Any

from bench.machine import load_average, wait_for_quiet
from bench.overhead_config import QUERY, OverheadConfig
from bench.stats import Timings


def measure_sentence_transformers(config: OverheadConfig, documents: list[str], dtype_name: str) -> dict[str, Any]:
    """Embed query and documents in one call, as vLLM's /rerank does for an embedding model."""
    import torch
    from sentence_transformers import SentenceTransformer

    from server.bundled import minilm_dir

    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[dtype_name]
    model = SentenceTransformer(str(minilm_dir()), device="cpu", model_kwargs={"dtype": dtype})

    def rank() -> list[float]:
        with torch.inference_mode():
            embeddings = model.encode([QUERY, *documents], convert_to_tensor=True, normalize_embeddings=True)
        return [float(score) for score in (embeddings[1:].float() @ embeddings[0].float())]

    load_before = wait_for_quiet(config.max_load, config.quiet_wait_s)
    for _ in range(config.warmup):
        rank()
    timings = Timings()
    for _ in range(config.repeats):
        started_at = time.perf_counter()
        scores = rank()
        timings.samples_s.append(time.perf_counter() - started_at)
    return {"timings": timings, "scores": scores, "load_1min": {"before": load_before, "after": load_average()}}
