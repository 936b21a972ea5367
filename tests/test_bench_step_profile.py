"""bench/step_profile.py: the step summary of a hand-made trace, with shares worked out by hand."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from bench.step_profile import classify, profiler_extra_args, summarize_trace


def _event(cat: str, name: str, ts: float, dur: float) -> dict[str, object]:
    return {"ph": "X", "cat": cat, "name": name, "ts": ts, "dur": dur}


def test_kernel_names_fall_in_the_expected_classes() -> None:
    assert classify("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x256x64") == "matmul"
    assert classify("nvjet_tst_256x128_64x4_1x2_h_bz_coopA_NNT") == "matmul"
    assert classify("void flash::flash_fwd_kernel<Flash_fwd_kernel_traits>") == "attention"
    assert classify("void vllm::reshape_and_cache_flash_kernel<__nv_bfloat16>") == "attention"
    assert classify("void vllm::dynamic_per_token_scaled_fp8_quant_kernel<c10::BFloat16>") == "fp8 quantization"
    assert classify("triton_red_fused__to_copy_add_mean_mul_pow_rsqrt_0") == "other kernels"
    # Names seen in vLLM 0.26's fp8 trace on an H200: a CUTLASS fp8 GEMM, and Inductor's
    # kernel that fuses SiLU with the dynamic per-token fp8 quantization of its output.
    assert classify("void cutlass::device_kernel<vllm::cutlass_3x_gemm_sm90_fp8<cutlass::float_e4m3_t>>") == "matmul"
    fused = "triton_red_fused__to_copy_abs_clamp_cutlass_scaled_mm_div_max_mul_reciprocal_silu_slice_unsqueeze_2"
    assert classify(fused) == "fp8 quantization"
    assert (
        classify("void cutlass::device_kernel<flash::enable_sm90_or_later<flash::FlashAttnFwdSm90<>>>") == "attention"
    )


def test_shares_gaps_and_matmul_rate_of_a_two_step_trace(tmp_path: Path) -> None:
    # Two steps of 1000 tokens. Step 1's GPU range is 0-100 us, step 2's 150-250 us.
    # Kernels: matmul 0-60 and 150-210 (120 us), attention 60-80 and 210-230 (40 us),
    # other 90-100 and 240-250 (20 us). Window 0-250 us; busy 180 us, idle 70 us, of which
    # 10 + 10 us inside the steps (80-90, 230-240) and 50 us between them (100-150).
    events = [
        _event("user_annotation", "execute_context_5(1000)_generation_0(0)", 0, 100),
        _event("user_annotation", "execute_context_5(1000)_generation_0(0)", 150, 100),
        _event("gpu_user_annotation", "execute_context_5(1000)_generation_0(0)", 0, 100),
        _event("gpu_user_annotation", "execute_context_5(1000)_generation_0(0)", 150, 100),
    ]
    for base in (0, 150):
        events += [
            _event("kernel", "sm90_xmma_gemm_bf16", base, 60),
            _event("kernel", "flash_fwd_kernel", base + 60, 20),
            _event("kernel", "triton_poi_fused_mul_silu", base + 90, 10),
        ]
    trace = tmp_path / "rank0.trace.json.gz"
    with gzip.open(trace, "wt") as handle:
        json.dump({"traceEvents": events}, handle)

    summary = summarize_trace(trace, computed_tokens=0, gflop_per_token=1.0)

    assert summary["steps"] == 2
    assert summary["computed_tokens"] == 2000
    assert summary["share_pct"] == {"matmul": 48.0, "attention": 16.0, "other kernels": 8.0}
    assert summary["gpu_idle_pct"] == 28.0
    assert summary["idle_in_steps_pct"] == 8.0
    assert summary["idle_between_steps_pct"] == 20.0
    # 2000 tokens x 1 GFLOP in 120 us of matmul kernels = 16,667 TFLOP/s.
    assert summary["matmul_tflops_in_kernels"] == pytest.approx(16666.7, abs=0.1)


def test_the_profiler_flag_survives_shell_splitting(tmp_path: Path) -> None:
    import shlex

    argv = shlex.split(profiler_extra_args(tmp_path / "traces"))
    assert argv[0] == "--profiler-config"
    config = json.loads(argv[1])
    assert config["profiler"] == "torch"
    assert config["torch_profiler_dir"] == str(tmp_path / "traces")
