"""The live GPU memory and engine panel of the page.

Call `build_monitor_panel(settings, sampler)` inside a `gr.Blocks` layout; the caller owns
the `GpuSampler` (start it before launch, stop it on shutdown). The panel creates its own
`EnginePoller` unless one is passed: the poller needs no thread, it fetches `/metrics` on
Gradio's event loop only while some tab is looking; `await panel.poller.aclose()` at shutdown
releases its HTTP client.

Each tab's `gr.Timer` ticks once a second with `queue=False`, so a refresh never takes a
Rerank slot or a queue place, and the tick only reads the sampler's latest snapshot and the
poller's cached state: no viewer ever makes an NVML read or waits on the network (but the
very first, for the first engine state).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import gradio as gr
import pandas as pd

from webui.engine import EnginePoller, EngineState
from webui.gpu import GpuDevice, GpuSampler, GpuSnapshot
from webui.markup import inline_markdown
from webui.page_load import PageLoad

GIB = 1024**3
TIME_COLUMN = "seconds ago"
USED_COLUMN = "used GiB"
GPU_COLUMN = "GPU"
METRICS_TIMEOUT_S = 2.0
"""A tick must stay cheap: a server slower than this to render /metrics counts as unreachable."""
STALE_AFTER_INTERVALS = 5
"""A snapshot older than this many sampling intervals means the sampler is stuck or gone."""


class MonitorSettings(Protocol):
    """What the panel reads from webui.settings.Settings."""

    @property
    def server_url(self) -> str: ...
    @property
    def api_key(self) -> str | None: ...
    @property
    def timeout(self) -> float: ...


@dataclass(frozen=True)
class MonitorPanel:
    gpu_summary: gr.Markdown
    memory_plot: gr.LinePlot
    engine_summary: gr.Markdown
    timer: gr.Timer
    poller: EnginePoller
    refresh: Callable[[], Awaitable[tuple[str, Any, str]]]
    """The tick's handler: (GPU markdown, plot update, engine markdown)."""


def format_gib(size_bytes: int) -> str:
    return f"{size_bytes / GIB:.1f} GiB"


def format_memory(used_bytes: int, total_bytes: int) -> str:
    """ "23.4 / 79.6 GiB (29%)"."""
    percent = round(100 * used_bytes / total_bytes) if total_bytes > 0 else 0
    return f"{used_bytes / GIB:.1f} / {total_bytes / GIB:.1f} GiB ({percent}%)"


def format_device(device: GpuDevice) -> str:
    heading = f"**GPU {device.index} · {inline_markdown(device.name)}**"
    utilization = (
        "utilisation n/a" if device.utilization_percent is None else f"utilisation {device.utilization_percent}%"
    )
    lines = [f"{heading}: {format_memory(device.used_bytes, device.total_bytes)} · {utilization}"]
    vllm = [p for p in device.processes if p.is_vllm]
    others = [p for p in device.processes if not p.is_vllm]
    if vllm:
        sizes = [p.used_bytes for p in vllm if p.used_bytes is not None]
        amount = format_gib(sum(sizes)) if sizes else "memory not reported by NVML"
        who = ", ".join(f"pid {p.pid} {inline_markdown(p.name)}" for p in vllm)
        lines.append(f"vLLM: {amount} ({who})")
    elif device.processes_error:
        lines.append(f"GPU processes unknown (NVML: {inline_markdown(device.processes_error)})")
    else:
        lines.append("vLLM: no vLLM process on this GPU")
    if others:
        other_bytes = sum(p.used_bytes or 0 for p in others)
        names = ", ".join(f"pid {p.pid} {inline_markdown(p.name)}" for p in others[:3])
        more = f" and {len(others) - 3} more" if len(others) > 3 else ""
        lines.append(f"Other processes: {format_gib(other_bytes)} ({names}{more})")
    return "  \n".join(lines)


def format_gpu_markdown(snapshot: GpuSnapshot, now: float, interval_s: float = 1.0) -> str:
    if not snapshot.available:
        text = f"**GPU memory:** {inline_markdown(snapshot.reason)}"
    else:
        text = "\n\n".join(format_device(device) for device in snapshot.devices)
        vllm_bytes = snapshot.vllm_used_bytes
        if len(snapshot.devices) > 1 and vllm_bytes is not None:
            text += f"\n\nvLLM on all GPUs: {format_gib(vllm_bytes)}"
    age = now - snapshot.timestamp
    if snapshot.history and age > STALE_AFTER_INTERVALS * interval_s:
        text += f"\n\n_Last GPU sample {age:.0f} s ago: the sampler is not running._"
    return text


def _count(value: int | None) -> str:
    return "n/a" if value is None else str(value)


def format_page_markdown(load: PageLoad) -> str:
    """The page's own Rerank jobs: exact and immediate, unlike the engine's gauges."""
    return "  \n".join(["**This page's jobs**", f"Ranking: {_count(load.running)}", f"Queued: {_count(load.waiting)}"])


def format_engine_markdown(state: EngineState, load: PageLoad | None = None) -> str:
    page = f"{format_page_markdown(load)}\n\n" if load is not None else ""
    if not state.reachable:
        return f"{page}**Engine unreachable.** {inline_markdown(state.error)}"

    def kv(value: float | None) -> str:
        return "n/a" if value is None else f"{100 * value:.1f}%"

    engines = f" ({state.engines} engines)" if state.engines > 1 else ""
    if state.servers:
        engines = f" ({len(state.servers)} servers, {state.engines} engines)"
    lines = [
        f"**Engine{engines}** (vLLM's /metrics, seconds behind)",
        f"Running: {_count(state.running)}",
        f"Waiting: {_count(state.waiting)}",
        f"KV cache: {kv(state.kv_cache_usage)}",
    ]
    # Numbered, not named: the person at the page never sees the servers' internal addresses.
    for number, (_, server) in enumerate(state.servers, start=1):
        if server.reachable:
            figures = f"{_count(server.running)} running, {_count(server.waiting)} waiting"
            lines.append(f"Server {number}: {figures}, KV {kv(server.kv_cache_usage)}")
        else:
            lines.append(f"Server {number}: unreachable")
    if state.error:
        lines.append(f"_{inline_markdown(state.error)}_")
    return page + "  \n".join(lines)


def history_frame(snapshot: GpuSnapshot) -> pd.DataFrame:
    """One row per sample and GPU: seconds before the latest sample, used GiB, GPU label."""
    labels = [f"GPU {index}: {name}" for index, name in enumerate(snapshot.device_names)]
    rows = [
        (point.timestamp - snapshot.timestamp, used / GIB, label)
        for point in snapshot.history
        for label, used in zip(labels, point.used_bytes, strict=False)
    ]
    frame = pd.DataFrame(rows, columns=[TIME_COLUMN, USED_COLUMN, GPU_COLUMN])
    return frame.astype({TIME_COLUMN: "float64", USED_COLUMN: "float64"})


def plot_update(snapshot: GpuSnapshot, history_s: float) -> dict[str, Any]:
    """The LinePlot's new value; hidden while there is no history (no GPU on this host)."""
    if not snapshot.history:
        return gr.update(visible=False)
    total = max((device.total_bytes for device in snapshot.devices), default=0)
    y_max = total / GIB if total else None
    return gr.update(
        value=history_frame(snapshot),
        visible=True,
        x_lim=[-history_s, 0],
        y_lim=[0, y_max],
    )


def build_monitor_panel(
    settings: MonitorSettings,
    sampler: GpuSampler,
    poller: EnginePoller | None = None,
    *,
    interval_s: float = 1.0,
    page_jobs: Callable[[], PageLoad] | None = None,
    metrics_urls: Sequence[str] = (),
) -> MonitorPanel:
    """Lay out the panel in the current gr.Blocks and wire its timer; `page_jobs`, when given,
    reads the page's own Rerank jobs, shown beside the engine's gauges (see webui/page_load.py);
    `metrics_urls`: the servers behind a fleet router, whose engines the panel adds up."""
    engine = poller or EnginePoller(
        settings.server_url,
        metrics_urls=metrics_urls,
        api_key=settings.api_key,
        interval_s=interval_s,
        timeout_s=min(settings.timeout, METRICS_TIMEOUT_S),
    )
    history_s = sampler.config.history_s
    last_plot: list[tuple[GpuSnapshot, dict[str, Any]]] = []

    def gpu_outputs(snapshot: GpuSnapshot) -> tuple[str, dict[str, Any]]:
        # Every tab shows the same snapshot: build its plot frame once, not once per viewer.
        if last_plot and last_plot[0][0] is snapshot:
            plot = last_plot[0][1]
        else:
            plot = plot_update(snapshot, history_s)
            last_plot[:] = [(snapshot, plot)]
        markdown = format_gpu_markdown(snapshot, time.time(), sampler.config.interval_s)
        return markdown, plot

    async def refresh() -> tuple[str, Any, str]:
        markdown, plot = gpu_outputs(sampler.snapshot())
        load = page_jobs() if page_jobs is not None else None
        return markdown, plot, format_engine_markdown(await engine.latest(), load)

    first_markdown, _ = gpu_outputs(sampler.snapshot())
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            gpu_summary = gr.Markdown(first_markdown)
            memory_plot = gr.LinePlot(
                x=TIME_COLUMN,
                y=USED_COLUMN,
                color=GPU_COLUMN,
                title=f"GPU memory used, last {history_s / 60:g} min",
                x_title="seconds ago",
                y_title="GiB",
                height=220,
                visible=False,
            )
        with gr.Column(scale=1, min_width=180):
            engine_summary = gr.Markdown("**Engine**  \nReading /metrics…", elem_id="engine-summary")
    timer = gr.Timer(interval_s)
    timer.tick(
        refresh,
        outputs=[gpu_summary, memory_plot, engine_summary],
        queue=False,
        show_progress="hidden",
        trigger_mode="once",
        api_name="monitor_refresh",
        api_visibility="undocumented",
    )
    return MonitorPanel(
        gpu_summary=gpu_summary,
        memory_plot=memory_plot,
        engine_summary=engine_summary,
        timer=timer,
        poller=engine,
        refresh=refresh,
    )
