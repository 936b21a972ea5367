"""The vLLM servers the test run asks for, each described once.

conftest starts every one that the collected tests name, side by side, at the first request:
a vLLM start is mostly three processes importing one after another, one core at a time, so
on 2 cores two starting together take what one takes alone (about 30 s), and four about
75 s, where the session's two and then two more, each alone, took 30 + 29 + 33 s. A server
is held to the end of the run unless a test takes it (the fleet's, to kill and stop) or a
module is done with it (so that its memory is back before the heavier modules run).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

FAST_START = ("--enforce-eager",)
"""Test servers skip torch.compile: startup drops by ~half on 2 cores and the scores are the
same computation. The launcher tests run the real profile flags."""
TINY_QWEN3_ARGS = ("--enforce-eager", "--dtype", "float32")
"""The tiny Qwen3 model is served in float32 so that its scores can be held to 1e-3 of the
float32 reference: in bf16 its deliberately large weights drift by a few hundredths, which
would let a real wiring error hide inside the tolerance."""
ACCESS_KEY = "test-key-0f9a3c"
"""The key of `keyed_server`."""
BARE_TEMPLATE = "{% for message in messages %}{{ message['content'] }}\n{% endfor %}"
"""Renders a pair as the bare query and document, as vLLM does with no template at all."""


@dataclass(frozen=True)
class Recipe:
    profile: str
    args: tuple[str, ...]
    """vLLM flags beyond the profile's (through `--extra-args`)."""
    tiny_qwen3: bool = False
    """Serve the tests' tiny random-weight Qwen3 reranker instead of the profile's model."""
    bare_template: bool = False
    """Swap the model card's template for BARE_TEMPLATE (the later --chat-template wins)."""
    env: dict[str, str] = field(default_factory=dict)
    """Set while the launcher starts (a key is given this way, so that no command line shows it)."""


RECIPES = {
    "tiny_qwen3_server": Recipe("qwen3-0.6b-cpu", TINY_QWEN3_ARGS, tiny_qwen3=True),
    "minilm_server": Recipe("cpu", FAST_START),
    # The access tests' keyed server, then the fleet's two (test_fleet takes them):
    "keyed_server": Recipe("cpu", FAST_START, env={"RERANK_API_KEY": ACCESS_KEY}),
    "second_keyed_server": Recipe("cpu", FAST_START, env={"RERANK_API_KEY": ACCESS_KEY}),
    # The score check's (stopped when its module is done):
    "untemplated_qwen3": Recipe("qwen3-0.6b-cpu", TINY_QWEN3_ARGS, tiny_qwen3=True, bare_template=True),
}


def extra_args(recipe: Recipe, scratch: Path) -> str:
    """The recipe's vLLM flags as one `--extra-args=` argument, the bare template written to
    `scratch` when it asks for one."""
    args = list(recipe.args)
    if recipe.bare_template:
        template = scratch / "bare.jinja"
        template.write_text(BARE_TEMPLATE)
        args += ["--chat-template", str(template)]
    return "--extra-args=" + " ".join(args)
