"""The Evaluate view: is the reranked order better than the order the documents came in?

The analyst gives relevance judgments, either as a file (webui/judgments.py) or by ticking
the relevant documents of one ranked query, and reads nDCG@10, MRR@10 and Recall@k
(webui/metrics.py) of the reranked order against the input order (the first stage's), per
query and averaged, with the difference. A second instruction, when given, is run on the same
judgments and shown beside the first. Judged queries are ranked as Rerank ranks them
(webui/job.py: the same prepared passages, batches, progress and Stop), through the same
queue slots and limits, one job at a time per tab with Rerank (webui/tab_job.py): while one runs,
Rerank is Stop and the view's own start buttons are greyed.

`build_evaluate_view()` lays the accordion out; `wire_evaluate_view(...)` connects it, after
the page's layout is complete.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr
import pandas as pd

from webui.client import RerankError
from webui.documents import DocumentError, check_limits, query_field, text_field
from webui.judgments import read_judgments
from webui.markup import inline_markdown
from webui.metrics import measure, measure_names
from webui.passages import BudgetError
from webui.results import clip, defuse_formula, save_export
from webui.tab_job import TabJobs, passages_progress

if TYPE_CHECKING:
    from webui.app import PageResources

HEADERS = ["Query", "Measure", "Input order", "Reranked", "Δ", "Reranked (B)", "Δ (B)"]
ALL_QUERIES = "All queries (mean)"
TICK_LABEL_CHARS = 90

Gather = Callable[[str | None, str, str | None, str | None], list[str]]
"""(pasted, split mode, upload, column) -> documents, as the Rerank button gathers them."""


@dataclass(frozen=True)
class QueryScores:
    query: str
    values: dict[str, dict[str, float]]
    """run ("input", "A", "B") -> measure name -> value."""


def result_rows(results: Sequence[QueryScores], names: Sequence[str], with_b: bool) -> list[list[object]]:
    """One row per query and measure, then the mean over queries of each measure."""

    def row(label: str, name: str, values: dict[str, float]) -> list[object]:
        base, a = values["input"], values["A"]
        cells: list[object] = [label, name, round(base, 4), round(a, 4), round(a - base, 4)]
        if with_b:
            cells += [round(values["B"], 4), round(values["B"] - base, 4)]
        else:
            cells += ["", ""]
        return cells

    rows = [
        row(result.query, name, {run: scores[name] for run, scores in result.values.items()})
        for result in results
        for name in names
    ]
    runs = ("input", "A", "B") if with_b else ("input", "A")
    for name in names:
        means = {run: sum(result.values[run][name] for result in results) / len(results) for run in runs}
        rows.append(row(ALL_QUERIES, name, means))
    return rows


def summary(results: Sequence[QueryScores], names: Sequence[str], with_b: bool) -> str:
    """One line per measure: the mean input → reranked, with the difference (and B's)."""
    rows = {str(row[1]): row for row in result_rows(results, names, with_b) if row[0] == ALL_QUERIES}
    count = len(results)
    lines = [f"Evaluated **{count}** judged quer{'y' if count == 1 else 'ies'} (mean over queries):"]
    for name in names:
        _, _, base, a, delta, b, delta_b = rows[name]
        line = f"- **{name}**: input order {base:.3f} → reranked **{a:.3f}** ({delta:+.3f})"
        if with_b:
            line += f" · with instruction B **{b:.3f}** ({delta_b:+.3f})"
        lines.append(line)
    if with_b:
        first = names[0]
        better = sum(result.values["B"][first] > result.values["A"][first] for result in results)
        worse = sum(result.values["B"][first] < result.values["A"][first] for result in results)
        lines.append(f"- Instruction B ranks better on {first} in {better} of {count} queries, worse in {worse}.")
    return "\n".join(lines)


def rows_csv(rows: Sequence[Sequence[object]], with_b: bool) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    headers = HEADERS if with_b else HEADERS[:5]
    writer.writerow(headers)
    for row in rows:
        writer.writerow([defuse_formula(cell) if isinstance(cell, str) else cell for cell in row[: len(headers)]])
    return buffer.getvalue()


def empty_results() -> pd.DataFrame:
    return pd.DataFrame(columns=HEADERS)


def recall_k(value: float | None) -> int:
    return 10 if value is None or value < 1 else int(value)


class EvaluateHandlers:
    """Handlers of the Evaluate view; all state lives in the page's shared resources."""

    def __init__(self, resources: PageResources, gather: Gather) -> None:
        self.resources = resources
        self.settings = resources.settings
        self.gather = gather

    def _documents(self, pasted: str | None, mode_label: str, upload: str | None, choice: str | None) -> list[str]:
        documents = self.gather(pasted, mode_label, upload, choice)
        if not documents:
            raise DocumentError("No documents: paste some (one per line, or as chosen) or upload a file.")
        check_limits(documents, self.settings.max_docs, self.settings.max_doc_bytes)
        return documents

    async def _rankings(
        self,
        queries: Sequence[str],
        documents: Sequence[str],
        instructions: Sequence[str],
        progress: gr.Progress,
    ) -> list[list[list[int]]]:
        """Per query, per instruction (A, then B if given): document positions best first."""
        model = await self.resources.client.model_info(max_age=5.0)
        runs = len(queries) * len(instructions)
        orders: list[list[list[int]]] = []
        for query_index, query in enumerate(queries):
            per_query = []
            for instruction_index, instruction in enumerate(instructions):
                run = query_index * len(instructions) + instruction_index

                def report(done: int, total: int, run: int = run) -> None:
                    passages_progress(progress, "Ranking judged queries", run * total + done, runs * total)

                outcome = await self.resources.rank(model, query, documents, instruction, on_progress=report)
                per_query.append([item.position for item in outcome.ranked])
            orders.append(per_query)
        return orders

    def _shown(self, results: list[QueryScores], k: int, with_b: bool) -> tuple[str, pd.DataFrame, dict[str, Any]]:
        names = measure_names(k)
        rows = result_rows(results, names, with_b)
        path = save_export(self.resources.export_dir(), "evaluate", rows_csv(rows, with_b))
        table = pd.DataFrame(rows, columns=HEADERS)
        return summary(results, names, with_b), table, gr.update(value=str(path), visible=True)

    @staticmethod
    def _refused(error: Exception) -> tuple[str, pd.DataFrame, dict[str, Any]]:
        # The view's line only, no toast: a toast outlives the input it was about.
        return f"⚠️ {inline_markdown(str(error))}", empty_results(), gr.update(value=None, visible=False)

    async def evaluate(
        self,
        judgments_file: str | None,
        instruction: str,
        second_instruction: str,
        pasted: str,
        mode_label: str,
        upload: str | None,
        choice: str | None,
        k: float | None,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 (Gradio's own idiom: it injects the tracker)
    ) -> tuple[str, pd.DataFrame, dict[str, Any]]:
        """(summary, per-query table, CSV download) for the uploaded judgments."""
        try:
            if not judgments_file:
                raise DocumentError("Upload a judgment file (.csv or .jsonl with query, document or doc_id, grade).")
            documents = self._documents(pasted, mode_label, upload, choice)
            judgments = read_judgments(Path(judgments_file), documents, self.settings.max_upload_bytes)
            instructions = [text_field(instruction, "instruction")]
            second = text_field(second_instruction, "second instruction").strip()
            model = await self.resources.client.model_info(max_age=5.0)
            with_b = bool(second) and model.contract.takes_instruction
            if second and not with_b:
                gr.Info("The server's model takes no instruction; instruction B was not run.")
            if with_b:
                instructions.append(second)
            queries = list(judgments.grades)
            orders = await self._rankings(queries, documents, instructions, progress)
        except (DocumentError, BudgetError, RerankError) as error:
            return self._refused(error)
        k_value = recall_k(k)
        input_order = list(range(len(documents)))
        results = []
        for query, per_query in zip(queries, orders, strict=True):
            grades = judgments.grades[query]
            values = {"input": measure(grades, input_order, k_value), "A": measure(grades, per_query[0], k_value)}
            if with_b:
                values["B"] = measure(grades, per_query[1], k_value)
            results.append(QueryScores(query, values))
        return self._shown(results, k_value, with_b)

    async def rank_for_ticking(
        self,
        query: str,
        instruction: str,
        pasted: str,
        mode_label: str,
        upload: str | None,
        choice: str | None,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 (Gradio's own idiom: it injects the tracker)
    ) -> tuple[dict[str, Any], dict[str, Any] | None, str]:
        """(the ranked documents to tick, the ranking kept for measuring, status line)."""
        try:
            query = query_field(query)
            documents = self._documents(pasted, mode_label, upload, choice)
            [[order]] = await self._rankings([query], documents, [text_field(instruction, "instruction")], progress)
        except (DocumentError, BudgetError, RerankError) as error:
            return gr.update(choices=[], value=[]), None, f"⚠️ {inline_markdown(str(error))}"
        choices = [
            (f"{rank}. [{position + 1}] {clip(' '.join(documents[position].split()), TICK_LABEL_CHARS)}", position)
            for rank, position in enumerate(order, start=1)
        ]
        state = {"query": query, "order": order, "count": len(documents)}
        status = f"Ranked **{len(documents):,}** documents for “{inline_markdown(query)}”: tick the relevant ones."
        return gr.update(choices=choices, value=[]), state, status

    def measure_ticks(
        self, ticked: list[int] | None, state: dict[str, Any] | None, k: float | None
    ) -> tuple[str, pd.DataFrame, dict[str, Any]]:
        """Measures of the ticked query: ticked documents grade 1, the rest 0."""
        if not state:
            return self._refused(DocumentError("Rank a query for ticking first."))
        if not ticked:
            return self._refused(DocumentError("Tick at least one relevant document."))
        count, order = int(state["count"]), [int(position) for position in state["order"]]
        relevant = {int(position) for position in ticked}
        grades = {position: int(position in relevant) for position in range(count)}
        k_value = recall_k(k)
        values = {"input": measure(grades, list(range(count)), k_value), "A": measure(grades, order, k_value)}
        return self._shown([QueryScores(str(state["query"]), values)], k_value, False)


@dataclass(frozen=True)
class EvaluateView:
    """The Evaluate accordion's components, for its wiring."""

    judgments: gr.File
    second_instruction: gr.Textbox
    k: gr.Number
    evaluate_button: gr.Button
    tick_rank: gr.Button
    ticks: gr.CheckboxGroup
    tick_status: gr.Markdown
    tick_measure: gr.Button
    ranking: gr.State
    evaluation: gr.Markdown
    table: gr.Dataframe
    download: gr.DownloadButton

    @property
    def starters(self) -> list[gr.Button]:
        """The buttons that start a job (greyed while the tab's job runs)."""
        return [self.evaluate_button, self.tick_rank]


def build_evaluate_view() -> EvaluateView:
    """The Evaluate accordion, laid out (wire_evaluate_view connects it)."""
    with gr.Accordion("Evaluate: is this ranking good?", open=False, elem_id="evaluate"):
        gr.Markdown(
            "Upload relevance judgments (.csv or .jsonl with columns `query`, `document` or `doc_id` "
            "(the Position column), `grade`: 0 not relevant, 1 or more relevant), or rank the query above "
            "and tick the relevant documents. Each judged query is ranked against the documents above; "
            "the reranked order is compared with the order they came in."
        )
        with gr.Row():
            judgments = gr.File(
                label="Judgments (.csv or .jsonl)",
                file_types=[".csv", ".jsonl"],
                file_count="single",
                type="filepath",
                height=120,
                elem_id="judgments",
            )
            with gr.Column():
                second_instruction = gr.Textbox(
                    label="Instruction B (optional, Qwen3 rerankers)",
                    info="Run the same judgments with this wording too, side by side with the instruction above.",
                    lines=2,
                )
                k = gr.Number(value=10, label="Recall at k", precision=0, minimum=1)
        evaluate_button = gr.Button("Evaluate", variant="primary", elem_id="evaluate-button")
        with gr.Accordion("…or tick relevant documents of one query", open=False):
            tick_rank = gr.Button("Rank the query above for ticking", elem_id="tick-rank-button")
            ticks = gr.CheckboxGroup(choices=[], label="Relevant documents", elem_id="ticks")
            tick_status = gr.Markdown("", elem_id="tick-status")
            tick_measure = gr.Button("Measure the ticked ranking", elem_id="tick-measure-button")
        ranking = gr.State(None)
        evaluation = gr.Markdown("", elem_id="evaluation")
        table = gr.Dataframe(
            value=empty_results(), headers=HEADERS, interactive=False, wrap=True, elem_id="evaluation-table"
        )
        download = gr.DownloadButton("Download per-query CSV", visible=False)
    return EvaluateView(
        judgments=judgments,
        second_instruction=second_instruction,
        k=k,
        evaluate_button=evaluate_button,
        tick_rank=tick_rank,
        ticks=ticks,
        tick_status=tick_status,
        tick_measure=tick_measure,
        ranking=ranking,
        evaluation=evaluation,
        table=table,
        download=download,
    )


def wire_evaluate_view(
    view: EvaluateView,
    handlers: EvaluateHandlers,
    jobs: TabJobs,
    *,
    query: gr.Textbox,
    instruction: gr.Textbox,
    pasted: gr.Textbox,
    split_mode: gr.Radio,
    upload: gr.File,
    choice: gr.Dropdown,
) -> None:
    """Evaluate and ranking for ticking run as the tab's job (Stop and Clear cancel them, their
    progress shows on the view's own line); measuring the ticks is cheap and is no job."""
    jobs.chain(
        "evaluate",
        [view.evaluate_button.click],
        handlers.evaluate,
        inputs=[view.judgments, instruction, view.second_instruction, pasted, split_mode, upload, choice, view.k],
        outputs=[view.evaluation, view.table, view.download],
        line=view.evaluation,
        starting=lambda: "⏳ Evaluating the judged queries… Stop (beside Clear) cancels it.",
        clears={view.table: empty_results(), view.download: gr.update(value=None, visible=False)},
        stopped="⏹️ Stopped; nothing was evaluated.",
    )
    jobs.chain(
        "rank_for_ticking",
        [view.tick_rank.click],
        handlers.rank_for_ticking,
        inputs=[query, instruction, pasted, split_mode, upload, choice],
        outputs=[view.ticks, view.ranking, view.tick_status],
        line=view.tick_status,
        starting=lambda: "⏳ Ranking the query for ticking… Stop (beside Clear) cancels it.",
        clears={view.ticks: gr.update(choices=[], value=[]), view.ranking: None},
        stopped="⏹️ Stopped; nothing was ranked.",
    )
    view.tick_measure.click(
        handlers.measure_ticks,
        inputs=[view.ticks, view.ranking, view.k],
        outputs=[view.evaluation, view.table, view.download],
        api_name="measure_ticks",
    )
