"""What the memory plan needs to know about a model: its shapes.

Shapes of the published checkpoints are written here so that `plan` works before any
download; a local model folder is read from its own config.json instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ModelShape:
    """The numbers that decide a transformer's weight and KV-cache bytes."""

    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    max_position_embeddings: int

    @property
    def num_params(self) -> int:
        """Parameters that vLLM loads for a reranker.

        The LM head is not counted: with `classifier_from_token` vLLM keeps only the rows
        of "no" and "yes", and the 4B/0.6B checkpoints tie it to the embedding anyway.
        """
        h, hd = self.hidden_size, self.head_dim
        attention = h * self.num_heads * hd * 2 + h * self.num_kv_heads * hd * 2
        mlp = 3 * h * self.intermediate_size
        norms = 2 * h + 2 * hd
        return self.vocab_size * h + self.num_layers * (attention + mlp + norms) + h

    def kv_bytes_per_token(self, dtype_bytes: float) -> int:
        """Keys and values of every layer for one token."""
        return int(2 * self.num_layers * self.num_kv_heads * self.head_dim * dtype_bytes)

    def activation_bytes_per_token(self, dtype_bytes: float) -> int:
        """Peak live activations per batched token inside one layer.

        The MLP dominates: gate+up output (2I), the activated product (I) and a few
        hidden-size buffers (residual, normed input, attention output, layer output).
        """
        return int((3 * self.intermediate_size + 4 * self.hidden_size) * dtype_bytes)


# Published configs of the Qwen3-Reranker family (config.json on the model hub).
QWEN3_RERANKER_0_6B = ModelShape(1024, 28, 16, 8, 128, 3072, 151669, 40960)
QWEN3_RERANKER_4B = ModelShape(2560, 36, 32, 8, 128, 9728, 151669, 40960)
QWEN3_RERANKER_8B = ModelShape(4096, 36, 32, 8, 128, 12288, 151669, 40960)
# sentence-transformers/all-MiniLM-L6-v2 (BERT: 12 heads of 32, no grouped KV).
MINILM_L6 = ModelShape(384, 6, 12, 12, 32, 1536, 30522, 512)


def shape_from_config(model_dir: Path) -> ModelShape:
    """Read the shapes of a local Hugging Face model folder."""
    config = json.loads((model_dir / "config.json").read_text())
    heads = config["num_attention_heads"]
    hidden = config["hidden_size"]
    return ModelShape(
        hidden_size=hidden,
        num_layers=config["num_hidden_layers"],
        num_heads=heads,
        num_kv_heads=config.get("num_key_value_heads", heads),
        head_dim=config.get("head_dim") or hidden // heads,
        intermediate_size=config["intermediate_size"],
        vocab_size=config["vocab_size"],
        max_position_embeddings=config.get("max_position_embeddings", 512),
    )
