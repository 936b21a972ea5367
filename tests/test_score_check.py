"""`python -m webui --check-server`: quiet on a model that ranks, one warning line on a Qwen3
reranker served without its prompt template (real vLLM servers)."""

from __future__ import annotations

import subprocess
import sys

from tests.support.server_process import REPO_ROOT, RunningServer
from webui.check import SanityResult


def check(server: RunningServer, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "webui", "--server-url", server.url, "--check-server", *args],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_quiet_on_the_bundled_minilm(minilm_server: RunningServer) -> None:
    out = check(minilm_server)
    assert out.returncode == 0, out.stderr
    assert (
        out.stdout.strip()
        == f"sentence-transformers/all-MiniLM-L6-v2 at {minilm_server.url} reranks (window 256 tokens)"
    )
    assert out.stderr == ""


def test_warns_for_a_qwen3_reranker_served_without_its_template(untemplated_qwen3: RunningServer) -> None:
    out = check(untemplated_qwen3, "--profile-label", "qwen3-0.6b-cpu")
    assert out.returncode == 0  # a warning, not a refusal: the server does answer
    warnings = out.stderr.strip().splitlines()
    assert len(warnings) == 1, out.stderr
    assert warnings[0].startswith(f"warning: {untemplated_qwen3.model} looks like a Qwen3 reranker served without")


def test_no_template_warning_when_the_template_is_served(tiny_qwen3_server: RunningServer) -> None:
    # Its random weights rank anything anywhere, so the ranking may still warn; the template
    # it is served with must not be reported missing.
    out = check(tiny_qwen3_server, "--profile-label", "qwen3-0.6b-cpu")
    assert out.returncode == 0, out.stderr
    assert "without its prompt template" not in out.stderr


def test_the_warning_names_the_template_first_then_the_ranking() -> None:
    assert SanityResult(worst_margin=0.5, template_tokens=None).warning("m") is None
    assert SanityResult(worst_margin=0.5, template_tokens=60).warning("m") is None
    ranking = SanityResult(worst_margin=0.01, template_tokens=None).warning("m")
    assert ranking is not None and ranking.startswith("warning: m does not rank plainly relevant documents first")
    template = SanityResult(worst_margin=-0.3, template_tokens=2).warning("m")
    assert template is not None and template.startswith("warning: m looks like a Qwen3 reranker served without")
