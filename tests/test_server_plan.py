"""The memory plan's arithmetic, checked by hand-computed figures."""

from __future__ import annotations

import pytest

from server.contract import Limits
from server.models import QWEN3_RERANKER_4B, shape_from_config
from server.plan import GIB, PlanError, make_plan
from server.profiles import get_profile


def test_qwen3_4b_on_an_80_gib_card_fits_in_12_gib() -> None:
    plan = make_plan(get_profile("qwen3-4b"), QWEN3_RERANKER_4B, Limits(), device_memory_gib=80)
    assert plan.total_bytes <= 12 * GIB
    # vLLM reported "Model loading took 7.56 GiB" for this checkpoint in bf16.
    assert 7.4 * GIB < plan.weights_bytes < 7.6 * GIB
    assert plan.gpu_memory_utilization is not None and plan.gpu_memory_utilization <= 0.16


def test_parameter_count_matches_the_published_4b_checkpoint() -> None:
    assert QWEN3_RERANKER_4B.num_params == 4_021_784_576


def test_kv_cache_is_sized_in_tokens_of_whole_engine_steps() -> None:
    profile = get_profile("qwen3-4b")
    plan = make_plan(profile, QWEN3_RERANKER_4B, Limits())
    # 36 layers x 8 KV heads x 128 dims x (K and V) x 2 bytes = 144 KiB per token.
    assert QWEN3_RERANKER_4B.kv_bytes_per_token(2) == 144 * 1024
    assert plan.kv_cache_tokens == int(profile.max_num_batched_tokens * profile.kv_cache_steps)
    assert plan.kv_cache_bytes == plan.kv_cache_tokens * 144 * 1024
    assert plan.gpu_memory_utilization is None  # no card given, no fraction


def test_max_model_len_follows_the_page_limits() -> None:
    limits = Limits(max_doc_tokens=500, max_query_tokens=100)
    plan = make_plan(get_profile("qwen3-4b"), QWEN3_RERANKER_4B, limits)
    assert plan.max_model_len == 672  # 500 + 100 + 64 of template = 664, rounded up to 16-token blocks
    assert plan.max_num_batched_tokens >= plan.max_model_len


def test_a_step_always_holds_one_whole_pair() -> None:
    limits = Limits(max_doc_tokens=16000)
    plan = make_plan(get_profile("qwen3-4b"), QWEN3_RERANKER_4B, limits)
    assert plan.max_model_len is not None
    assert plan.max_num_batched_tokens >= plan.max_model_len > 16000


def test_fp8_halves_the_linear_weights_but_not_the_embedding() -> None:
    bf16 = make_plan(get_profile("qwen3-4b"), QWEN3_RERANKER_4B, Limits())
    fp8 = make_plan(get_profile("qwen3-4b-fp8"), QWEN3_RERANKER_4B, Limits())
    embedding = QWEN3_RERANKER_4B.vocab_size * QWEN3_RERANKER_4B.hidden_size
    assert fp8.weights_bytes == (bf16.weights_bytes - 2 * embedding) // 2 + 2 * embedding


def test_a_plan_larger_than_the_card_is_refused_in_one_line() -> None:
    with pytest.raises(PlanError, match=r"needs .* GiB per GPU but the GPU has 12\.0 GiB"):
        make_plan(get_profile("qwen3-8b"), get_profile("qwen3-8b").shape, Limits(), device_memory_gib=12)


def test_a_pair_longer_than_the_model_is_refused() -> None:
    with pytest.raises(PlanError, match="exceeds the model"):
        make_plan(get_profile("qwen3-4b"), QWEN3_RERANKER_4B, Limits(max_doc_tokens=50_000))


def test_cpu_profiles_get_no_gpu_fraction() -> None:
    plan = make_plan(get_profile("cpu"), get_profile("cpu").shape, Limits(), device_memory_gib=80)
    assert plan.gpu_memory_utilization is None
    assert plan.max_model_len is None  # MiniLM keeps its own 256-token limit


def test_local_model_shapes_come_from_its_config(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "config.json").write_text(
        '{"hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,'
        ' "head_dim": 64, "intermediate_size": 256, "vocab_size": 151669, "max_position_embeddings": 4096}'
    )
    shape = shape_from_config(tmp_path)
    assert shape.kv_bytes_per_token(2) == 2 * 2 * 1 * 64 * 2
