"""The configurations the GPU benchmark serves, each through `python -m server serve`.

A configuration is a profile plus, optionally, the memory plan switched off and more vLLM
flags appended (they win over the plan's). Extra candidates for tuning come from the
command line as JSON with the same fields.
"""

from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass(frozen=True)
class BenchConfig:
    name: str
    profile: str
    memory_plan: bool = True
    """False: vLLM's own defaults for memory and batching (`--memory-plan off`)."""
    extra_args: str = ""
    """More vLLM flags, appended last (`--extra-args`)."""
    description: str = ""
    model: str = ""
    """A model folder other than serve's --model-dir (a sibling's random model)."""

    def serve_args(self) -> list[str]:
        args = ["--profile", self.profile, "--memory-plan", "on" if self.memory_plan else "off"]
        if self.extra_args:
            args.append(f"--extra-args={self.extra_args}")  # "=": the value starts with "--"
        return args


COMMON_ADVICE = (
    "--dtype half --max-model-len 4096 --gpu-memory-utilization 0.85 --max-num-seqs 32 --max-num-batched-tokens 8192"
)
"""The flags most guides give for serving a reranker with vLLM."""

BUILTIN = {
    c.name: c
    for c in (
        BenchConfig("vllm-defaults", "qwen3-4b", False, "", "vLLM's defaults (only the Qwen3 loading flags)"),
        BenchConfig("common-advice", "qwen3-4b", False, COMMON_ADVICE, "the usual advice"),
        BenchConfig("qwen3-4b", "qwen3-4b", True, "", "this project's bf16 profile"),
        BenchConfig("qwen3-4b-fp8", "qwen3-4b-fp8", True, "", "this project's fp8 profile"),
    )
}


def parse_candidate(text: str) -> BenchConfig:
    """'{"name": ..., "profile": ..., "memory_plan": false, "extra_args": "...", "model": DIR}'."""
    fields = json.loads(text)
    return BenchConfig(
        name=str(fields["name"]),
        profile=str(fields.get("profile", "qwen3-4b")),
        memory_plan=bool(fields.get("memory_plan", True)),
        extra_args=str(fields.get("extra_args", "")),
        description=str(fields.get("description", "tuning candidate")),
        model=str(fields.get("model", "")),
    )
