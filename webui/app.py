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
import hmac
import html
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd
from starlette.middleware import Middleware

from webui.client import RerankClient, RerankError, ServerTimeout
from webui.documents import (
    DocumentError,
    SplitMode,
    check_limits,
    documents_from_upload,
    join_documents,
    split_documents,
    split_mode,
    text_field,
    upload_choices,
)
from webui.gpu import GpuSampler
from webui.panel import build_monitor_panel
from webui.passages import BudgetError, RankingOutcome, is_qwen3, rank_documents
from webui.results import TABLE_DATATYPES, TABLE_HEADERS, csv_text, table_rows
from webui.settings import DEFAULT_INSTRUCTION, Settings
from webui.upload_limit import UploadLimit

STYLE_PATH = Path(__file__).with_name("style.css")
BANNER_REFRESH_S = 5.0
"""How often every open tab re-reads the server's model and window (queue=False, cheap)."""
BANNER_TIMEOUT_S = 5.0
"""A status check waits at most this long, also for a pool slot while Rerank jobs hold them all."""
CSV_KEEP_S = 3600.0
"""CSV exports older than this are deleted: they hold the analyst's documents."""
DEFAULT_TOP_N = 10

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


def escape_line(text: str) -> str:
    """One line of text made inert for Markdown and HTML (file names, server messages)."""
    text = " ".join(text.split())
    # html.escape turns < > & into entities; the rest are the characters Markdown acts on mid-line.
    return "".join("\\" + char if char in "\\`*_[]|~#" else char for char in html.escape(text, quote=False))


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
    return split_documents(pasted, mode), f"({mode.value.lower()})"


def count_line(documents: Sequence[str], source: str, settings: Settings) -> str:
    count = len(documents)
    noun = "document" if count == 1 else "documents"
    line = f"**{count:,}** {noun} {escape_line(source)}"
    if count > settings.max_docs:
        line += f" · over the limit of {settings.max_docs:,}"
    return line


def outcome_status(outcome: RankingOutcome, shown: int, seconds: float, model_id: str, qwen3: bool) -> str:
    total = len(outcome.ranked)
    lines = [
        f"Ranked **{total:,}** document{'s' if total != 1 else ''} in **{seconds:.2f} s** · "
        f"**{outcome.prompt_tokens:,}** tokens · model `{escape_line(model_id)}`"
        + (f" · showing the top {shown:,}" if shown < total else "")
    ]
    if outcome.split_documents:
        what = "with this query and instruction" if qwen3 else "per text"
        lines.append(
            f"**{outcome.split_documents:,}** document{'s were' if outcome.split_documents != 1 else ' was'} "
            f"longer than the model's window ({outcome.budget:,} tokens {what}) and split into overlapping "
            "passages; each takes its best passage's score, and the Passage column says which."
        )
    return "\n\n".join(lines)


def error_status(message: str) -> str:
    return f"⚠️ {escape_line(message)}"


def write_csv(directory: Path, text: str) -> Path:
    """Save one export, deleting exports older than CSV_KEEP_S first."""
    cutoff = time.time() - CSV_KEEP_S
    for old in directory.glob("rerank-*.csv"):
        with contextlib.suppress(FileNotFoundError):
            if old.stat().st_mtime < cutoff:
                old.unlink()
    path = directory / f"rerank-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}.csv"
    # utf-8-sig so that Excel opens non-ASCII text correctly.
    path.write_text(text, encoding="utf-8-sig", newline="")
    return path


# --- handlers -----------------------------------------------------------------------------


@dataclass
class PageResources:
    """What one page process shares between all viewers, opened at launch, closed at shutdown."""

    settings: Settings
    client: RerankClient
    sampler: GpuSampler
    closers: list[Callable[[], Any]] = field(default_factory=list)
    """Async callables closing other loop-bound resources (the panel's /metrics poller)."""
    workdir: Path | None = None
    """Where CSV exports are written; made at the first export, removed at shutdown."""

    def export_dir(self) -> Path:
        if self.workdir is None or not self.workdir.is_dir():
            self.workdir = Path(tempfile.mkdtemp(prefix="rerank-page-"))
        return self.workdir


class PageHandlers:
    """The page's event handlers: inputs in, outputs out; all state lives in PageResources."""

    def __init__(self, resources: PageResources) -> None:
        self.resources = resources
        self.settings = resources.settings

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
            gr.Warning(str(error))
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
            return gr.update(value=f"⚠️ **Server not ready.** {escape_line(str(error))}", elem_classes=["banner-down"])
        profile = f" · profile **{escape_line(self.settings.profile_label)}**" if self.settings.profile_label else ""
        text = (
            f"✅ Server ready · model `{escape_line(info.model_id)}`{profile} · "
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
    ) -> tuple[Any, str, dict[str, Any]]:
        """(table, status line, CSV download). On any failure the inputs are left untouched."""
        started = time.perf_counter()
        try:
            query = text_field(query, "query").strip()
            instruction = text_field(instruction, "instruction")
            if not query:
                raise DocumentError("Enter a query to rank the documents against.")
            documents, _ = gather_documents(pasted, mode_label, upload, choice, self.settings)
            if not documents:
                raise DocumentError("No documents: paste some (one per line, or as chosen) or upload a file.")
            check_limits(documents, self.settings.max_docs, self.settings.max_doc_bytes)
            client = self.resources.client
            model = await client.model_info(max_age=BANNER_REFRESH_S)
            qwen3 = is_qwen3(model.model_id, self.settings.profile_label)
            outcome = await rank_documents(
                client,
                model,
                query,
                documents,
                instruction=(instruction.strip() or DEFAULT_INSTRUCTION) if qwen3 else None,
                batch_size=self.settings.max_docs,
            )
        except (DocumentError, BudgetError, RerankError) as error:
            gr.Warning(str(error))
            return empty_table(), error_status(str(error)), gr.update(value=None, visible=False)
        shown = clamp_top_n(top_n, len(outcome.ranked))
        table = pd.DataFrame(table_rows(outcome.ranked, query, shown), columns=TABLE_HEADERS)
        path = write_csv(self.resources.export_dir(), csv_text(outcome.ranked, shown))
        status = outcome_status(outcome, shown, time.perf_counter() - started, model.model_id, qwen3)
        if outcome.split_documents:
            gr.Info(f"{outcome.split_documents:,} long document(s) were split into passages; see the Passage column.")
        return table, status, gr.update(value=str(path), visible=True)


# --- login throttling ---------------------------------------------------------------------


class LoginThrottle:
    """Checks logins and slows guessing, which Gradio's own `auth` does not.

    Every failure costs the caller `delay_s`; after `max_failures` failures for one user name
    within `window_s`, that name is refused (right password or not) until the window passes.
    Gradio hands `auth` no client address, so throttling is per name; a shared lock for all
    names would let one guesser lock every analyst out.
    """

    def __init__(
        self,
        pairs: Sequence[tuple[str, str]],
        *,
        max_failures: int = 5,
        window_s: float = 300.0,
        delay_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._passwords = dict(pairs)
        self._max_failures = max_failures
        self._window_s = window_s
        self._delay_s = delay_s
        self._clock = clock
        self._failures: dict[str, list[float]] = {}

    def _recent(self, username: str, now: float) -> list[float]:
        kept = [moment for moment in self._failures.pop(username, []) if now - moment < self._window_s]
        if kept:
            self._failures[username] = kept
        return kept

    def locked(self, username: str) -> bool:
        return len(self._recent(username, self._clock())) >= self._max_failures

    async def check(self, username: str, password: str) -> bool:
        """Gradio's `auth` callable; async so that the delay never blocks the server."""
        expected = self._passwords.get(username)
        ok = expected is not None and hmac.compare_digest(expected.encode(), password.encode())
        if ok and not self.locked(username):
            return True
        now = self._clock()
        if len(self._failures) > 10_000:  # names made up by a guesser must not grow memory forever
            for name in list(self._failures):
                self._recent(name, now)
        self._failures[username] = [*self._recent(username, now), now]
        await asyncio.sleep(self._delay_s)
        return False


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
        return super().launch(*args, **{**self.launch_options, **kwargs})


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
    )
    handlers = PageHandlers(resources)

    # delete_cache: uploads and exports are the analyst's documents; Gradio drops its copies hourly.
    # fill_width: the ranking table needs the room; Gradio centres a narrow column by default.
    demo = RerankDemo(title="Rerank documents", analytics_enabled=False, delete_cache=(3600, 3600), fill_width=True)
    with demo:
        gr.Markdown(
            "# Rerank documents\nPaste a query and documents; the server's reranker puts the most relevant first."
        )
        banner = gr.Markdown("Checking the rerank server…", elem_id="server-banner", elem_classes=["banner-down"])

        query = gr.Textbox(label="Query", placeholder="What are you looking for?", lines=1, max_lines=4)
        with gr.Accordion("Instruction (Qwen3 rerankers only)", open=False):
            instruction = gr.Textbox(
                value=settings.instruction,
                label="Instruction",
                info="Describes the task to the model; the model card's default suits web-style search.",
                lines=2,
            )
        with gr.Row():
            split_mode = gr.Radio(
                choices=[mode.value for mode in SplitMode],
                value=SplitMode.LINES.value,
                label="Split pasted text into documents",
            )
            doc_count = gr.Markdown("**0** documents", elem_id="doc-count")
        pasted = gr.Textbox(
            label="Documents",
            placeholder="One document per line (or as chosen above)",
            lines=10,
            max_lines=30,
            max_length=settings.max_upload_bytes,
        )
        with gr.Row():
            upload = gr.File(
                label="…or upload .txt, .csv or .jsonl",
                file_types=[".txt", ".csv", ".jsonl"],
                file_count="single",
                type="filepath",
                height=140,
            )
            # Custom values: the choices arrive per upload, and documents.py checks the name itself.
            choice = gr.Dropdown(label="Column", choices=[], visible=False, interactive=True, allow_custom_value=True)
        with gr.Row():
            top_n = gr.Number(value=DEFAULT_TOP_N, label="Top N", info="0 shows every document", precision=0, minimum=0)
            rerank_button = gr.Button("Rerank", variant="primary", elem_id="rerank-button")
            clear_button = gr.ClearButton(value="Clear", elem_id="clear-button")
        gr.Examples(examples=EXAMPLES, inputs=[query, pasted, split_mode], example_labels=EXAMPLE_LABELS)

        with gr.Row(equal_height=False):
            with gr.Column(scale=5):
                status = gr.Markdown("", elem_id="status")
                table = gr.Dataframe(
                    value=empty_table(),
                    headers=TABLE_HEADERS,
                    datatype=TABLE_DATATYPES,
                    interactive=False,
                    wrap=True,
                    label="Ranking",
                    elem_id="results",
                    column_widths=["7%", "10%", "13%", "50%", "10%", "10%"],
                    max_height=700,
                )
                download = gr.DownloadButton("Download CSV", visible=False)
            with gr.Column(scale=2, min_width=280):
                gr.Markdown("### GPU memory and engine")
                panel = build_monitor_panel(settings, resources.sampler, metrics_urls=settings.metrics_urls)
                resources.closers.append(panel.poller.aclose)

        # --- wiring ---
        clear_button.add([query, pasted, upload, table, status, download])
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
        gr.on(
            triggers=[rerank_button.click, query.submit],
            fn=handlers.rerank,
            inputs=[query, instruction, pasted, split_mode, upload, choice, top_n],
            outputs=[table, status, download],
            api_name="rerank",
            concurrency_limit=settings.concurrency,
            concurrency_id="rerank",
        )

    demo.resources = resources
    demo.launch_options = launch_defaults(settings, resources)
    demo.queue(default_concurrency_limit=settings.concurrency, max_size=settings.queue_size, api_open=False)
    return demo
