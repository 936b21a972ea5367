"""The analyst's page: paste or upload documents, rank them against a query, read the table.

    python -m webui --server-url http://127.0.0.1:8000

`create_demo(settings)` returns the Blocks with its queue configured; `demo.launch()` then
serves it with the safe defaults of `launch_defaults` (login throttled, no run history, no
/monitoring, no tracebacks). Reads top to bottom: pure helpers, the handlers, login
throttling, the Blocks subclass, then `create_demo` (layout, then event wiring).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd
from starlette.middleware import Middleware

from webui.batches import Progress
from webui.client import ModelInfo, RerankClient, RerankError, ServerTimeout
from webui.documents import (
    DocumentError,
    SplitMode,
    check_limits,
    documents_from_text,
    documents_from_upload,
    join_documents,
    limit_problem,
    query_field,
    split_mode,
    text_field,
    upload_choices,
)
from webui.evaluate import EvaluateHandlers, build_evaluate_view, wire_evaluate_view
from webui.gpu import GpuSampler
from webui.job import RankingOutcome, rank_documents
from webui.login import LoginThrottle
from webui.markup import inline_markdown
from webui.page_load import page_load
from webui.panel import build_monitor_panel
from webui.passages import BudgetError
from webui.prepared import PreparedCache
from webui.results import TABLE_DATATYPES, TABLE_HEADERS, csv_text, ranking_table, save_export
from webui.settings import Settings
from webui.tab_job import CONCURRENCY_ID, NO_JOB, TabJobs, passages_progress
from webui.upload_limit import UploadLimit

STYLE_PATH = Path(__file__).with_name("style.css")
BANNER_REFRESH_S = 5.0
"""How often every open tab re-reads the server's model and window (queue=False, cheap)."""
BANNER_TIMEOUT_S = 5.0
"""A status check waits at most this long, also for a pool slot while Rerank jobs hold them all."""
DEFAULT_TOP_N = 10
WARNING_MARK = "⚠️"
PHONE_MAX_WIDTH_PX = 640
"""At most this wide the columns stack (style.css hides secondary table columns at the same width)."""
SHOW_RESULTS_ON_A_PHONE = (
    f"() => {{ if (window.innerWidth <= {PHONE_MAX_WIDTH_PX}) "
    "document.getElementById('status')?.scrollIntoView({block: 'start'}); }"
)

EXAMPLES = [
    [
        "what is the capital of China?",
        join_documents(
            [
                "Beijing is the capital of China.",
                "Paris is the capital of France.",
                "Shanghai is the largest city in China.",
                "The Great Wall of China stretches across the north of the country.",
                "Tokyo is the capital of Japan.",
            ],
            SplitMode.LINES,
        ),
        SplitMode.LINES.value,
    ],
    [
        "how do plants make energy from sunlight?",
        join_documents(
            [
                "Photosynthesis lets plants turn light, water and carbon dioxide into sugar and oxygen.",
                "The stock market closed higher on Friday after a volatile week.",
                "Chlorophyll in the leaves absorbs mostly red and blue light.",
                "Cats sleep for up to sixteen hours a day.",
            ],
            SplitMode.BLANK_LINES,
        ),
        SplitMode.BLANK_LINES.value,
    ],
    [
        "symptoms of dehydration",
        join_documents(
            [
                "Thirst, dark urine, tiredness and dizziness\nare early signs that the body lacks water.",
                "A balanced diet includes vegetables,\nwhole grains and protein.",
                "Severe dehydration can cause confusion,\na rapid heartbeat and fainting.",
            ],
            SplitMode.DASHES,
        ),
        SplitMode.DASHES.value,
    ],
]
EXAMPLE_LABELS = ["Capital of China (one per line)", "Photosynthesis (blank lines)", "Dehydration (--- lines)"]


# --- pure helpers -------------------------------------------------------------------------


def empty_table() -> pd.DataFrame:
    return pd.DataFrame(columns=TABLE_HEADERS)


def clamp_top_n(value: float | None, total: int) -> int:
    """Rows to show: the analyst's top-N, or everything when it is blank or not positive."""
    if value is None or value <= 0:
        return total
    return min(int(value), total)


def gather_documents(
    pasted: str | None, mode_label: str, upload: str | None, choice: str | None, settings: Settings
) -> tuple[list[str], str]:
    """(documents, where they came from): the upload when one is attached, else the pasted text."""
    mode = split_mode(mode_label)
    pasted = text_field(pasted, "pasted text")
    if upload:
        path = Path(upload)
        documents = documents_from_upload(path, choice, mode, settings.max_upload_bytes)
        detail = f", {'column' if path.suffix.lower() == '.csv' else 'field'} “{choice}”" if choice else ""
        return documents, f"from {path.name}{detail} (the pasted text is ignored while a file is attached)"
    if len(pasted.encode("utf-8")) > settings.max_upload_bytes:
        raise DocumentError(f"The pasted text is over {settings.max_upload_bytes:,} bytes; upload a file instead.")
    return documents_from_text(pasted, mode), f"({mode.value.lower()})"


def count_line(documents: Sequence[str], source: str, settings: Settings) -> str:
    """ "**5** documents (one per line)", with Rerank's own refusal appended when it would refuse."""
    count = len(documents)
    noun = "document" if count == 1 else "documents"
    line = f"**{count:,}** {noun} {inline_markdown(source)}"
    problem = limit_problem(documents, settings.max_docs, settings.max_doc_bytes)
    if problem:
        line += f" · ⚠️ Rerank will refuse this: {inline_markdown(problem)}"
    return line


def outcome_status(outcome: RankingOutcome, shown: int, seconds: float, model_id: str, takes_instruction: bool) -> str:
    total = len(outcome.ranked)
    lines = [
        f"Ranked **{total:,}** document{'s' if total != 1 else ''} in **{seconds:.2f} s** · "
        f"**{outcome.prompt_tokens:,}** tokens · model `{inline_markdown(model_id)}`"
        + (f" · showing the top {shown:,}" if shown < total else "")
        + (f" · {outcome.reused:,} of {outcome.passages:,} passages needed no server call" if outcome.reused else "")
    ]
    if outcome.long_documents:
        what = "with this query and instruction" if takes_instruction else "per text"
        lines.append(
            f"**{outcome.long_documents:,}** document{'s were' if outcome.long_documents != 1 else ' was'} "
            f"longer than the model's window ({outcome.budget:,} tokens {what}) and split into overlapping "
            "passages; each takes its best passage's score, and the Passage column says which."
        )
    return "\n\n".join(lines)


def error_status(message: str) -> str:
    return f"{WARNING_MARK} {inline_markdown(message)}"


# --- handlers -----------------------------------------------------------------------------


@dataclass
class PageResources:
    """What one page process shares between all viewers, opened at launch, closed at shutdown."""

    settings: Settings
    client: RerankClient
    sampler: GpuSampler
    prepared: PreparedCache
    """Documents' passage splits and token counts, shared by every viewer, reused by every query."""
    closers: list[Callable[[], Any]] = field(default_factory=list)
    """Async callables closing other loop-bound resources (the panel's /metrics poller)."""
    workdir: Path | None = None
    """Where CSV exports are written; made at the first export, removed at shutdown."""

    async def rank(
        self, model: ModelInfo, query: str, documents: Sequence[str], instruction: str, on_progress: Progress
    ) -> RankingOutcome:
        """One ranking as every view of the page runs it: the server's contract decides the
        instruction and the documents per request, the page's settings the batch size."""
        contract = model.contract
        return await rank_documents(
            self.client,
            model,
            self.prepared,
            query,
            documents,
            instruction=contract.instruction_for(instruction),
            batch_tokens=self.settings.batch_tokens,
            max_docs=min(self.settings.max_docs, contract.limits.max_docs),
            on_progress=on_progress,
        )

    def export_dir(self) -> Path:
        if self.workdir is None or not self.workdir.is_dir():
            self.workdir = Path(tempfile.mkdtemp(prefix="rerank-page-"))
        return self.workdir


class PageHandlers:
    """The page's event handlers: inputs in, outputs out; all state lives in PageResources."""

    def __init__(self, resources: PageResources, demo: gr.Blocks | None = None) -> None:
        self.resources = resources
        self.settings = resources.settings
        self.demo = demo
        """The Blocks whose queue starting_line reads (None: no queue to read, as in unit tests)."""

    def count(self, pasted: str, mode_label: str, upload: str | None, choice: str | None) -> str:
        try:
            documents, source = gather_documents(pasted, mode_label, upload, choice, self.settings)
        except DocumentError as error:
            return error_status(str(error))
        return count_line(documents, source, self.settings)

    def upload_changed(self, upload: str | None, pasted: str, mode_label: str) -> tuple[dict[str, Any], str]:
        """A new or removed file: offer its columns or fields, and recount."""
        if not upload:
            return gr.update(choices=[], value=None, visible=False), self.count(pasted, mode_label, None, None)
        try:
            choices = upload_choices(Path(upload), self.settings.max_upload_bytes)
        except DocumentError as error:
            return gr.update(choices=[], value=None, visible=False), error_status(str(error))
        value = choices[0] if choices else None
        label = "Column" if Path(upload).suffix.lower() == ".csv" else "Field"
        dropdown = gr.update(choices=choices, value=value, visible=bool(choices), label=label)
        return dropdown, self.count(pasted, mode_label, upload, value)

    async def banner(self) -> dict[str, Any]:
        """The server's model, profile and window, or a clear line while it is starting or down."""
        client = self.resources.client
        try:
            info = await client.model_info(timeout=BANNER_TIMEOUT_S)
        except ServerTimeout:
            return gr.update(
                value="⏳ The rerank server is busy or slow to answer; ranking may wait.", elem_classes=["banner-down"]
            )
        except RerankError as error:
            return gr.update(
                value=f"⚠️ **Server not ready.** {inline_markdown(str(error))}", elem_classes=["banner-down"]
            )
        profile = (
            f" · profile **{inline_markdown(self.settings.profile_label)}**" if self.settings.profile_label else ""
        )
        text = (
            f"✅ Server ready · model `{inline_markdown(info.model_id)}`{profile} · "
            f"window **{info.max_model_len:,}** tokens · up to **{self.settings.max_docs:,}** documents per request"
        )
        return gr.update(value=text, elem_classes=[])

    async def rerank(
        self,
        query: str,
        instruction: str,
        pasted: str,
        mode_label: str,
        upload: str | None,
        choice: str | None,
        top_n: float | None,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 (Gradio's own idiom: it injects the tracker)
    ) -> tuple[Any, str, dict[str, Any]]:
        """(table, status line, CSV download). On any failure the inputs are left untouched.

        Progress shows passages scored as each batch returns; Stop (or a client's cancel)
        cancels this task, and the job sends nothing more (webui/job.py)."""
        started = time.perf_counter()
        try:
            query = query_field(query)
            instruction = text_field(instruction, "instruction")
            documents, _ = gather_documents(pasted, mode_label, upload, choice, self.settings)
            if not documents:
                raise DocumentError("No documents: paste some (one per line, or as chosen) or upload a file.")
            check_limits(documents, self.settings.max_docs, self.settings.max_doc_bytes)
            client = self.resources.client
            model = await client.model_info(max_age=BANNER_REFRESH_S)
            outcome = await self.resources.rank(
                model,
                query,
                documents,
                instruction,
                on_progress=lambda done, total: passages_progress(progress, "Scoring", done, total),
            )
        except (DocumentError, BudgetError, RerankError) as error:
            # The status line only, no toast: a toast outlives the input it was about.
            return empty_table(), error_status(str(error)), gr.update(value=None, visible=False)
        shown = clamp_top_n(top_n, len(outcome.ranked))
        table = ranking_table(outcome.ranked, query, shown)
        path = save_export(self.resources.export_dir(), "rerank", csv_text(outcome.ranked, shown))
        status = outcome_status(
            outcome, shown, time.perf_counter() - started, model.model_id, model.contract.takes_instruction
        )
        return table, status, gr.update(value=str(path), visible=True)

    # The browser's Rerank runs as start -> rerank -> finish (webui/tab_job.py); Stop and Clear cancel it.

    def starting_line(self, pasted: str, mode_label: str, upload: str | None, choice: str | None) -> str:
        """The status line while a Rerank job waits or runs, before its progress arrives."""
        try:
            documents, _ = gather_documents(pasted, mode_label, upload, choice, self.settings)
            what = f"**{len(documents):,}** document{'s' if len(documents) != 1 else ''}"
        except DocumentError:
            what = "the documents"
        load = page_load(self.demo, CONCURRENCY_ID)
        ahead = ""
        if load.running is not None and load.running >= self.settings.concurrency:
            ahead = f" once a slot is free ({load.running} job{'s' if load.running != 1 else ''} running)"
        return f"⏳ Ranking {what}{ahead}… Stop cancels it."

    def clear(self, jobs: TabJobs) -> tuple[Any, ...]:
        """Every input the analyst typed or attached, and every output (each job's results and
        line, `jobs.resets()`), back to the start."""
        return (
            *jobs.buttons(NO_JOB),
            "",  # query
            "",  # pasted
            None,  # upload
            gr.update(choices=[], value=None, visible=False),  # column or field
            count_line([], f"({SplitMode.LINES.value.lower()})", self.settings),
            *jobs.resets().values(),
        )

    def forget_warning(self, status: str | None) -> Any:
        """An input changed: a warning about the last attempt no longer applies (the count line
        speaks for the new input). Results stay; they are cleared when the next job starts."""
        return "" if (status or "").startswith(WARNING_MARK) else gr.skip()


# --- the Blocks -------------------------------------------------------------------------


def page_lifespan(resources: PageResources) -> Callable[[Any], AbstractAsyncContextManager[None]]:
    """Open the GPU sampler when the server starts; close everything loop-bound when it stops."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        resources.sampler.start()
        try:
            yield
        finally:
            await resources.client.aclose()
            for close in resources.closers:
                await close()
            await asyncio.to_thread(resources.sampler.stop)
            if resources.workdir is not None:
                shutil.rmtree(resources.workdir, ignore_errors=True)

    return lifespan


def launch_defaults(settings: Settings, resources: PageResources) -> dict[str, Any]:
    """What `launch()` uses unless the caller says otherwise: the issue's safe defaults."""
    return {
        "server_name": settings.host,
        "server_port": settings.port,
        "share": settings.share,
        "auth": LoginThrottle(settings.auth).check if settings.auth else None,
        "auth_message": "Sign in to rank documents.",
        "show_error": False,
        "enable_monitoring": False,
        "run_history": False,
        "max_file_size": settings.max_upload_bytes,
        "footer_links": ["gradio", "settings"],
        "css_paths": [STYLE_PATH],
        "app_kwargs": {
            "lifespan": page_lifespan(resources),
            "middleware": [Middleware(UploadLimit, max_bytes=settings.max_upload_bytes)],
        },
    }


class RerankDemo(gr.Blocks):
    """gr.Blocks that carries the page's shared resources and launches with safe defaults,
    however it is launched (by `python -m webui`, a test, or a notebook)."""

    resources: PageResources
    launch_options: dict[str, Any]

    def launch(self, *args: Any, **kwargs: Any) -> Any:
        return super().launch(*args, **merge_launch_options(self.launch_options, kwargs))


def merge_launch_options(defaults: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """The caller's `launch()` arguments over the page's defaults, except that the ASGI app's
    own arguments are merged, not replaced: the page's upload limit stays in front of any
    middleware the caller adds, and the page's lifespan (GPU sampler, HTTP pools, exports)
    runs around the caller's."""
    merged = {**defaults, **given}
    ours, theirs = defaults.get("app_kwargs") or {}, given.get("app_kwargs") or {}
    if theirs:
        app_kwargs = {**ours, **theirs}
        app_kwargs["middleware"] = [*ours.get("middleware", []), *theirs.get("middleware", [])]
        if "lifespan" in ours and "lifespan" in theirs:
            app_kwargs["lifespan"] = _nested_lifespans(ours["lifespan"], theirs["lifespan"])
        merged["app_kwargs"] = app_kwargs
    return merged


def _nested_lifespans(outer: Callable[[Any], Any], inner: Callable[[Any], Any]) -> Callable[[Any], Any]:
    @contextlib.asynccontextmanager
    async def both(app: Any) -> AsyncIterator[None]:
        async with outer(app), inner(app):
            yield

    return both


def create_demo(settings: Settings) -> RerankDemo:
    """The page, its queue configured: `concurrency` Rerank jobs at once, `queue_size` waiting."""
    resources = PageResources(
        settings=settings,
        client=RerankClient(
            settings.server_url,
            timeout=settings.timeout,
            max_connections=settings.concurrency,
            api_key=settings.api_key,
            rerank_path=settings.rerank_path,
        ),
        sampler=GpuSampler(),
        prepared=PreparedCache(settings.prepared_cache_bytes),
    )
    # delete_cache: uploads and exports are the analyst's documents; Gradio drops its copies hourly.
    # fill_width: the ranking table needs the room; Gradio centres a narrow column by default.
    demo = RerankDemo(title="Rerank documents", analytics_enabled=False, delete_cache=(3600, 3600), fill_width=True)
    handlers = PageHandlers(resources, demo)
    with demo:
        gr.Markdown(
            "# Rerank documents\nPaste a query and documents; the server's reranker puts the most relevant first.",
            elem_id="page-title",
        )
        banner = gr.Markdown("Checking the rerank server…", elem_id="server-banner", elem_classes=["banner-down"])

        # Wide screens: inputs left, results right, so the query, Rerank and the top of the
        # ranking share one 900 px screen. Narrow ones: the columns stack (min_width).
        with gr.Row(equal_height=False, elem_id="workspace"):
            with gr.Column(scale=4, min_width=320, elem_id="inputs"):
                query = gr.Textbox(label="Query", placeholder="What are you looking for?", lines=1, max_lines=4)
                with gr.Row(elem_id="actions"):
                    rerank_button = gr.Button("Rerank", variant="primary", elem_id="rerank-button", min_width=100)
                    stop_button = gr.Button("Stop", variant="stop", visible=False, elem_id="stop-button", min_width=100)
                    clear_button = gr.Button("Clear", elem_id="clear-button", min_width=100)
                doc_count = gr.Markdown(count_line([], "(one per line)", settings), elem_id="doc-count")
                pasted = gr.Textbox(
                    label="Documents",
                    placeholder="One document per line (or as chosen below)",
                    lines=6,
                    max_lines=14,
                    max_length=settings.max_upload_bytes,
                )
                split_mode = gr.Radio(
                    choices=[mode.value for mode in SplitMode],
                    value=SplitMode.LINES.value,
                    label="Split pasted text into documents",
                )
                with gr.Row():
                    upload = gr.File(
                        label="…or upload .txt, .csv or .jsonl",
                        file_types=[".txt", ".csv", ".jsonl"],
                        file_count="single",
                        type="filepath",
                        height=130,
                    )
                    # Custom values: the choices arrive per upload, and documents.py checks the name itself.
                    choice = gr.Dropdown(
                        label="Column", choices=[], visible=False, interactive=True, allow_custom_value=True
                    )
                top_n = gr.Number(
                    value=DEFAULT_TOP_N, label="Top N", info="0 shows every document", precision=0, minimum=0
                )
                with gr.Accordion("Instruction (Qwen3 rerankers only)", open=False):
                    instruction = gr.Textbox(
                        value=settings.instruction,
                        label="Instruction",
                        info="Describes the task to the model; the model card's default suits web-style search.",
                        lines=2,
                    )
                gr.Examples(examples=EXAMPLES, inputs=[query, pasted, split_mode], example_labels=EXAMPLE_LABELS)

            with gr.Column(scale=6, min_width=320, elem_id="outputs"):
                status = gr.Markdown("", elem_id="status")
                table = gr.Dataframe(
                    value=empty_table(),
                    headers=TABLE_HEADERS,
                    datatype=TABLE_DATATYPES,
                    interactive=False,
                    wrap=True,
                    label="Ranking",
                    elem_id="results",
                    column_widths=["64px", "84px", "110px", "auto", "96px", "96px"],
                    max_height=560,
                )
                download = gr.DownloadButton("Download CSV", visible=False, elem_id="download-csv")
                with gr.Accordion("GPU memory and engine", open=True, elem_id="monitor"):
                    panel = build_monitor_panel(
                        settings,
                        resources.sampler,
                        page_jobs=lambda: page_load(demo, CONCURRENCY_ID),
                        metrics_urls=settings.metrics_urls,
                    )
                    resources.closers.append(panel.poller.aclose)
        evaluate_view = build_evaluate_view()

        # --- wiring ---
        # One job at a time per tab, of any kind; the flag also stops Enter in the query box
        # from starting a second one.
        jobs = TabJobs(
            demo,
            rerank_button,
            stop_button,
            gr.State(NO_JOB),
            concurrency=settings.concurrency,
            starters=evaluate_view.starters,
        )
        for trigger in (pasted.change, split_mode.change, choice.change):
            trigger(
                handlers.count,
                inputs=[pasted, split_mode, upload, choice],
                outputs=doc_count,
                queue=False,
                show_progress="hidden",
                trigger_mode="always_last",
                api_visibility="private",
            )
        upload.change(
            handlers.upload_changed,
            inputs=[upload, pasted, split_mode],
            outputs=[choice, doc_count],
            queue=False,
            show_progress="hidden",
            api_visibility="private",
        )
        gr.on(
            triggers=[query.change, pasted.change, split_mode.change, upload.change, choice.change],
            fn=handlers.forget_warning,
            inputs=status,
            outputs=status,
            queue=False,
            show_progress="hidden",
            trigger_mode="always_last",
            api_visibility="private",
        )
        banner_timer = gr.Timer(BANNER_REFRESH_S)
        for trigger in (demo.load, banner_timer.tick):
            trigger(
                handlers.banner,
                outputs=banner,
                queue=False,
                show_progress="hidden",
                trigger_mode="once",
                api_visibility="private",
            )

        jobs.chain(
            "rerank",
            [rerank_button.click, query.submit],
            handlers.rerank,
            inputs=[query, instruction, pasted, split_mode, upload, choice, top_n],
            outputs=[table, status, download],
            line=status,
            starting=handlers.starting_line,
            starting_inputs=[pasted, split_mode, upload, choice],
            clears={table: empty_table(), download: gr.update(value=None, visible=False)},
            stopped="⏹️ Stopped; nothing was ranked.",
            # On a phone the ranking is below the inputs: bring its status line into view.
            finish_js=SHOW_RESULTS_ON_A_PHONE,
        )
        wire_evaluate_view(
            evaluate_view,
            EvaluateHandlers(
                resources,
                gather=lambda text, mode, file, column: gather_documents(text, mode, file, column, settings)[0],
            ),
            jobs,
            query=query,
            instruction=instruction,
            pasted=pasted,
            split_mode=split_mode,
            upload=upload,
            choice=choice,
        )
        # Stop and Clear cancel whichever job of the tab runs (all of them are in jobs.events).
        stop_button.click(
            jobs.stop,
            inputs=jobs.running,
            outputs=jobs.stop_outputs,
            cancels=jobs.events,
            queue=False,
            api_visibility="private",
        )
        clear_button.click(
            lambda: handlers.clear(jobs),
            outputs=[*jobs.controls, query, pasted, upload, choice, doc_count, *jobs.resets()],
            cancels=jobs.events,
            queue=False,
            show_progress="hidden",
            api_visibility="private",
        )

    demo.resources = resources
    demo.launch_options = launch_defaults(settings, resources)
    demo.queue(default_concurrency_limit=settings.concurrency, max_size=settings.queue_size, api_open=False)
    return demo
