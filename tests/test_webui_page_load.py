"""The page's own job counts (webui/page_load.py) where Gradio's queue cannot say: before any job,
and on something that is not a queued Blocks. The live counts are checked in a real browser
(tests/test_browser.py: the panel while a job is held at the server, and a full queue)."""

from __future__ import annotations

import gradio as gr

from webui.page_load import PageLoad, page_load, queue_full


def test_a_queued_page_before_its_first_job_has_none_running_or_waiting() -> None:
    with gr.Blocks() as demo:
        gr.Button("Rerank").click(lambda: None, concurrency_id="rerank")
    demo.queue(max_size=3)
    assert page_load(demo, "rerank") == PageLoad(running=0, waiting=0)
    assert queue_full(demo) is False


def test_without_a_readable_queue_the_counts_are_unknown_not_zero() -> None:
    assert page_load(object(), "rerank") == PageLoad(running=None, waiting=None)
    assert queue_full(object()) is False
