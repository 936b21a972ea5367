"""One job at a time per browser tab: Rerank, Evaluate and ranking a query for ticking.

    jobs = TabJobs(demo, rerank_button, stop_button, running, concurrency=4, starters=[evaluate_button])
    event = jobs.chain("evaluate", [evaluate_button.click], handlers.evaluate, inputs=[...], outputs=[...],
                       line=evaluation, starting=lambda: "⏳ Evaluating…", stopped="⏹️ Stopped.")
    stop_button.click(jobs.stop, outputs=jobs.stop_outputs, cancels=jobs.events, queue=False)

Every job runs as start -> job -> finish. The start step (not queued, so it answers at once)
turns Rerank into Stop, greys the other start buttons, clears the job's previous results and
puts a line saying what runs; it refuses a second job of the same tab (and a full queue) by
raising, which ends the chain there without Gradio's red toast. The job itself is queued in the
Rerank slots (one concurrency id, so the panel counts every kind) and shows its own gr.Progress
on its line only. Stop and Clear cancel whichever job runs; the tab's `running` state names it,
so Stop's message lands on that job's line and no other.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from webui.page_load import queue_full

NO_JOB = ""
"""The tab's `running` state when no job runs; otherwise the running job's kind."""
CONCURRENCY_ID = "rerank"
"""Every job of the page shares the Rerank slots (and the panel counts them) under this id."""
BUSY_MESSAGE = "The page is busy: every Rerank slot and queue place is taken. Please try again in a minute."


def passages_progress(progress: gr.Progress, doing: str, done: int, total: int) -> None:
    """A job's gr.Progress, its count in the description ("Scoring: 3/14 passages", over the
    bar): style.css hides Gradio's own "3/14 passages | 2.1/6.0s" text, whose ETA is an average
    over earlier jobs, not this one's."""
    progress((done, total), desc=f"{doing}: {done}/{total} passages", unit="passages")


@dataclass
class _Kind:
    line: Any
    clears: dict[Any, Any]
    stopped: str


@dataclass
class TabJobs:
    """The tab's job controls and every job event wired through them (for Stop's `cancels`)."""

    demo: gr.Blocks
    rerank_button: gr.Button
    stop_button: gr.Button
    running: gr.State
    """The kind of the tab's running job, NO_JOB when none runs."""
    concurrency: int
    starters: Sequence[gr.Button] = ()
    """Start buttons other than Rerank: greyed while a job runs."""
    events: list[Any] = field(default_factory=list)
    kinds: dict[str, _Kind] = field(default_factory=dict)

    @property
    def controls(self) -> list[Any]:
        return [self.rerank_button, self.stop_button, *self.starters, self.running]

    def buttons(self, running: str) -> tuple[Any, ...]:
        """Outputs for `controls`: exactly one of Rerank and Stop is shown, the other start
        buttons take no click while a job runs, and the state names the job."""
        idle = running == NO_JOB
        return (
            gr.update(visible=idle),
            gr.update(visible=not idle),
            *(gr.update(interactive=idle) for _ in self.starters),
            running,
        )

    def chain(
        self,
        kind: str,
        triggers: Sequence[Any],
        job: Callable[..., Any],
        *,
        inputs: Sequence[Any],
        outputs: Sequence[Any],
        line: Any,
        starting: Callable[..., str],
        stopped: str,
        starting_inputs: Sequence[Any] = (),
        clears: dict[Any, Any] | None = None,
        finish_js: str | None = None,
    ) -> Any:
        """Wire start -> job -> finish for `triggers`; returns the job's event. `starting` gets
        `starting_inputs` and says what runs; `clears` (component -> value) are the previous
        results, blanked when the job starts and by Clear; `stopped` is `line` after Stop."""
        clears = clears or {}
        self.kinds[kind] = _Kind(line, clears, stopped)
        controls = self.controls

        def start(*values: Any) -> tuple[Any, ...]:
            *given, running = values
            if running != NO_JOB or queue_full(self.demo):
                raise gr.Error(BUSY_MESSAGE, visible=False, print_exception=False)
            return (*self.buttons(kind), *clears.values(), starting(*given))

        def not_started(running: str) -> tuple[Any, ...]:
            """A second start while this tab's job runs changes nothing; a full queue gets the
            page's one busy line (API callers get Gradio's own "busy")."""
            if running != NO_JOB:
                return (gr.skip(),) * (len(controls) + 1)
            return (*self.buttons(NO_JOB), f"⏳ {BUSY_MESSAGE}")

        started = gr.on(
            triggers=list(triggers),
            fn=start,
            inputs=[*starting_inputs, self.running],
            outputs=[*controls, *clears, line],
            queue=False,
            show_progress="hidden",
            api_visibility="private",
        )
        started.failure(
            not_started, inputs=self.running, outputs=[*controls, line], queue=False, api_visibility="private"
        )
        # The job's own progress shows on its line only (style.css hides Gradio's timer there,
        # whose ETA is an average over earlier jobs, not this one's).
        event = started.success(
            job,
            inputs=list(inputs),
            outputs=list(outputs),
            api_name=kind,
            concurrency_limit=self.concurrency,
            concurrency_id=CONCURRENCY_ID,
            show_progress="minimal",
            show_progress_on=[line],
        )
        event.then(lambda: self.buttons(NO_JOB), outputs=controls, queue=False, api_visibility="private", js=finish_js)
        self.events.append(event)
        return event

    @property
    def stop_outputs(self) -> list[Any]:
        return [*self.controls, *(kind.line for kind in self.kinds.values())]

    def stop(self, running: str) -> tuple[Any, ...]:
        """Stop's handler (its `cancels` are `events`): the stopped job's line says so."""
        lines = (kind.stopped if name == running else gr.skip() for name, kind in self.kinds.items())
        return (*self.buttons(NO_JOB), *lines)

    def resets(self) -> dict[Any, Any]:
        """Every job's results and line, as Clear leaves them."""
        return {
            component: value
            for kind in self.kinds.values()
            for component, value in (*kind.clears.items(), (kind.line, ""))
        }
