"""One job per tab (webui/tab_job.py): what the start, Stop and Clear steps return, and how
the chain is wired. The same behaviour in a real browser is in tests/test_browser.py (Rerank)
and tests/test_browser_session.py (Evaluate)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import gradio as gr
import pytest

from webui.tab_job import CONCURRENCY_ID, NO_JOB, TabJobs


@pytest.fixture
def jobs() -> Iterator[tuple[TabJobs, dict[str, Any]]]:
    with gr.Blocks() as demo:
        rerank, stop, evaluate = gr.Button("Rerank"), gr.Button("Stop"), gr.Button("Evaluate")
        status, evaluation, table = gr.Markdown(), gr.Markdown(), gr.Dataframe()
        tab = TabJobs(demo, rerank, stop, gr.State(NO_JOB), concurrency=2, starters=[evaluate])
        tab.chain(
            "rerank",
            [rerank.click],
            lambda: "ranked",
            inputs=[],
            outputs=[status],
            line=status,
            starting=lambda: "ranking",
            stopped="stopped ranking",
        )
        tab.chain(
            "evaluate",
            [evaluate.click],
            lambda: ("evaluated", None),
            inputs=[],
            outputs=[evaluation, table],
            line=evaluation,
            starting=lambda: "evaluating",
            stopped="stopped evaluating",
            clears={table: "empty"},
        )
    demo.queue(max_size=3)
    yield tab, {"status": status, "evaluation": evaluation, "table": table, "demo": demo}


def test_while_a_job_runs_stop_replaces_rerank_and_the_other_starts_are_greyed(
    jobs: tuple[TabJobs, dict[str, Any]],
) -> None:
    tab, _ = jobs
    rerank, stop, evaluate, running = tab.buttons("evaluate")
    assert (rerank["visible"], stop["visible"], evaluate["interactive"], running) == (False, True, False, "evaluate")
    rerank, stop, evaluate, running = tab.buttons(NO_JOB)
    assert (rerank["visible"], stop["visible"], evaluate["interactive"], running) == (True, False, True, NO_JOB)


def test_stop_writes_on_the_stopped_jobs_line_only(jobs: tuple[TabJobs, dict[str, Any]]) -> None:
    tab, parts = jobs
    assert tab.stop_outputs[-2:] == [parts["status"], parts["evaluation"]]
    *_, running, status_line, evaluation_line = tab.stop("evaluate")
    assert running == NO_JOB
    assert evaluation_line == "stopped evaluating"
    assert status_line == gr.skip()


def test_clear_resets_every_jobs_results_and_line(jobs: tuple[TabJobs, dict[str, Any]]) -> None:
    tab, parts = jobs
    assert tab.resets() == {parts["status"]: "", parts["table"]: "empty", parts["evaluation"]: ""}


def test_every_job_shares_the_rerank_slots_and_shows_progress_on_its_line(
    jobs: tuple[TabJobs, dict[str, Any]],
) -> None:
    tab, parts = jobs
    demo: gr.Blocks = parts["demo"]
    queued = {fn.api_name: fn for fn in demo.fns.values() if fn.api_name in ("rerank", "evaluate")}
    assert {name: (fn.concurrency_id, fn.concurrency_limit) for name, fn in queued.items()} == {
        "rerank": (CONCURRENCY_ID, 2),
        "evaluate": (CONCURRENCY_ID, 2),
    }
    assert [list(queued[name].show_progress_on or []) for name in ("rerank", "evaluate")] == [
        [parts["status"]],
        [parts["evaluation"]],
    ]
    assert len(tab.events) == 2
    # The start steps answer at once, outside the queue (a full queue gets the page's own line).
    starts = [fn for fn in demo.fns.values() if not fn.queue and fn.fn is not None and fn.fn.__name__ == "start"]
    assert len(starts) == 2


def test_a_start_is_refused_while_the_tabs_job_runs(jobs: tuple[TabJobs, dict[str, Any]]) -> None:
    _, parts = jobs
    demo: gr.Blocks = parts["demo"]
    start = next(fn.fn for fn in demo.fns.values() if fn.fn is not None and fn.fn.__name__ == "start")
    assert start is not None
    with pytest.raises(gr.Error):
        start("evaluate")
    *_, running, line = start(NO_JOB)
    assert (running, line) == ("rerank", "ranking")
