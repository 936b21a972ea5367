"""A random-weight model with the exact shapes of Qwen/Qwen3-Reranker-4B (or its 0.6B and 8B siblings).

No GPU host here can download the real weights. Memory and speed depend on the shapes
and dtypes alone, so a checkpoint of the published config with random weights gives the
same figures; its scores mean nothing (the benchmark still checks that vLLM serves the
numbers the model card's code computes from the same weights).

    python -m bench.random_model OUT_DIR --tokenizer DIR [--device cuda] [--size 0.6b|4b|8b]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

QWEN3_RERANKER_4B_CONFIG = {
    "architectures": ["Qwen3ForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
    "head_dim": 128,
    "hidden_act": "silu",
    "hidden_size": 2560,
    "initializer_range": 0.02,
    "intermediate_size": 9728,
    "max_position_embeddings": 40960,
    "max_window_layers": 36,
    "model_type": "qwen3",
    "num_attention_heads": 32,
    "num_hidden_layers": 36,
    "num_key_value_heads": 8,
    "rms_norm_eps": 1e-06,
    "rope_scaling": None,
    "rope_theta": 1000000,
    "sliding_window": None,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
    "use_cache": True,
    "use_sliding_window": False,
    "vocab_size": 151669,
}
"""Qwen/Qwen3-Reranker-4B's config.json as published."""

QWEN3_RERANKER_4B_PARAMS = 4_021_784_576
"""Its parameter count (tied embeddings), checked after building."""

SIZES = {
    "4b": ("Qwen/Qwen3-Reranker-4B", {}, QWEN3_RERANKER_4B_PARAMS),
    "0.6b": (
        "Qwen/Qwen3-Reranker-0.6B",
        {"hidden_size": 1024, "intermediate_size": 3072, "num_hidden_layers": 28, "num_attention_heads": 16,
         "max_window_layers": 28},
        595_776_512,
    ),
    "8b": (
        "Qwen/Qwen3-Reranker-8B",
        {"hidden_size": 4096, "intermediate_size": 12288, "tie_word_embeddings": False},
        8_188_548_096,
    ),
}  # fmt: skip
"""The published siblings' config.json differ from the 4B's in these fields only; their
parameter counts (the 8B's untied LM head included) are checked after building."""


def write_random_model(
    out_dir: Path, tokenizer_dir: Path, device: str = "cuda", seed: int = 0, size: str = "4b"
) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, Qwen3Config

    marker = out_dir / "random-weights.json"
    if marker.is_file():
        return out_dir
    name, changes, expected = SIZES[size]
    torch.manual_seed(seed)
    config = Qwen3Config.from_dict({**QWEN3_RERANKER_4B_CONFIG, **changes})
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)  # type: ignore[no-untyped-call]
    params = sum(p.numel() for p in model.parameters())
    if params != expected:
        raise RuntimeError(f"built {params} parameters, expected {expected} for {name}")
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    for filename in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tokenizer_dir / filename, out_dir / filename)
    marker.write_text(json.dumps({"params": params, "seed": seed, "shapes_of": name}) + "\n")
    return out_dir


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--tokenizer", type=Path, required=True, help="folder with Qwen3's tokenizer.json")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", choices=sorted(SIZES), default="4b")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    write_random_model(args.out_dir, args.tokenizer, args.device, args.seed, args.size)
    print(f"random {SIZES[args.size][0]} in {args.out_dir} ({time.perf_counter() - start:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
