"""The model card's plain transformers implementation: what a user does without a server.

Verbatim in substance from the Qwen3-Reranker card: left-padded batches of
prefix + "<Instruct>: ...\\n<Query>: ...\\n<Document>: ..." + suffix, one forward pass,
softmax over the "no"/"yes" logits at the last position. It loads in bf16 with PyTorch's
SDPA attention (the card's flash_attention_2 needs the flash-attn package, which the host
image does not have). One request's documents make one batch, requests run one after
another: a single process owns the GPU.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.texts import RerankJob

PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the "
    'Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
)
SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
MAX_LENGTH = 8192


@dataclass(frozen=True)
class PeerRun:
    wall_s: float
    pairs: int
    latencies_s: tuple[float, ...]
    scores: tuple[tuple[float, ...], ...]
    """Per job, in document order."""

    @property
    def pairs_per_s(self) -> float:
        return self.pairs / self.wall_s


class CardReranker:
    def __init__(self, model_dir: Path, device: str = "cuda") -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.device = device
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
        model: Any = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16)
        self.model = model.to(device).eval()
        self.yes = self.tokenizer.convert_tokens_to_ids("yes")
        self.no = self.tokenizer.convert_tokens_to_ids("no")
        self.prefix_tokens = self.tokenizer.encode(PREFIX, add_special_tokens=False)
        self.suffix_tokens = self.tokenizer.encode(SUFFIX, add_special_tokens=False)

    def _inputs(self, pairs: Sequence[str]) -> Any:
        inputs = self.tokenizer(
            list(pairs),
            padding=False,
            truncation="longest_first",
            return_attention_mask=False,
            max_length=MAX_LENGTH - len(self.prefix_tokens) - len(self.suffix_tokens),
        )
        for i, ids in enumerate(inputs["input_ids"]):
            inputs["input_ids"][i] = self.prefix_tokens + ids + self.suffix_tokens
        inputs = self.tokenizer.pad(inputs, padding=True, return_tensors="pt", max_length=MAX_LENGTH)
        return {key: value.to(self.device) for key, value in inputs.items()}

    def scores(self, job: RerankJob) -> list[float]:
        torch = self.torch
        pairs = [f"<Instruct>: {INSTRUCTION}\n<Query>: {job.query}\n<Document>: {doc}" for doc in job.documents]
        with torch.no_grad():
            logits = self.model(**self._inputs(pairs)).logits[:, -1, :]
            stacked = torch.stack([logits[:, self.no], logits[:, self.yes]], dim=1)
            result: list[float] = torch.nn.functional.log_softmax(stacked, dim=1)[:, 1].exp().tolist()
        return result

    def run(self, jobs: Sequence[RerankJob]) -> PeerRun:
        latencies, scores = [], []
        start = time.perf_counter()
        for job in jobs:
            t0 = time.perf_counter()
            scores.append(tuple(self.scores(job)))  # .tolist() waits for the GPU
            latencies.append(time.perf_counter() - t0)
        wall = time.perf_counter() - start
        pairs = sum(len(job.documents) for job in jobs)
        return PeerRun(wall, pairs, tuple(latencies), tuple(scores))
