"""GPU sampler, GPU formatting and the panel's wiring in a real Gradio server.

    .venv/bin/python -m pytest tests/test_webui_gpu.py -q

This host has no NVIDIA GPU: the unavailable path runs against the real nvidia-ml-py, and
the sampling path against the real `pynvml` module with its NVML calls replaced
(monkeypatch refuses names the real module lacks, so the fake cannot drift from the API).
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import httpx
import pynvml
import pytest

from tests.support.page import wait_until
from tests.support.server_process import free_port
from webui.gpu import GpuDevice, GpuProcess, GpuSampler, GpuSamplerConfig, GpuSnapshot, HistoryPoint
from webui.panel import (
    GIB,
    format_device,
    format_gpu_markdown,
    format_memory,
    history_frame,
    plot_update,
)

NO_PROCESS_PID = 4_194_400  # above Linux's largest pid_max: never a live process


# The sampler's threads move within milliseconds: poll fast, give up after 5 s.
wait_for = functools.partial(wait_until, what="the sampler's state", timeout=5.0, interval=0.01)


def nvml_works() -> bool:
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return False
    pynvml.nvmlShutdown()
    return True


# ---------------------------------------------------------------- a fake NVML behind pynvml


@dataclass
class FakeGpu:
    name: str
    total: int
    used_v2: int
    reserved: int = 512 * 1024**2
    utilization: int | None = 50
    compute: list[tuple[int, int | None]] = field(default_factory=list)
    graphics: list[tuple[int, int | None]] = field(default_factory=list)
    processes_error: int | None = None
    """An NVML error code that the process queries raise, e.g. NVML_ERROR_NO_PERMISSION."""


@dataclass
class FakeNvml:
    gpus: list[FakeGpu]
    v2_supported: bool = True
    process_names: dict[int, str] = field(default_factory=dict)
    fail_reads: set[int] = field(default_factory=set)
    """Sampling passes (1-based, counted by v2 memory reads of GPU 0) that fail."""
    calls: Counter[str] = field(default_factory=Counter)
    callers: set[str] = field(default_factory=set)
    """Names of the threads that called NVML: only the sampler's may."""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, name: str) -> None:
        with self.lock:
            self.calls[name] += 1
            self.callers.add(threading.current_thread().name)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for name in (
            "nvmlInit",
            "nvmlShutdown",
            "nvmlDeviceGetCount",
            "nvmlDeviceGetHandleByIndex",
            "nvmlDeviceGetName",
            "nvmlDeviceGetMemoryInfo",
            "nvmlDeviceGetUtilizationRates",
            "nvmlDeviceGetComputeRunningProcesses",
            "nvmlDeviceGetGraphicsRunningProcesses",
            "nvmlSystemGetProcessName",
        ):
            monkeypatch.setattr(pynvml, name, getattr(self, name), raising=True)

    def nvmlInit(self) -> None:
        self.count("nvmlInit")

    def nvmlShutdown(self) -> None:
        self.count("nvmlShutdown")

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeGpu:
        return self.gpus[index]

    def nvmlDeviceGetName(self, gpu: FakeGpu) -> str:
        return gpu.name

    def nvmlDeviceGetMemoryInfo(self, gpu: FakeGpu, version: int | None = None) -> Any:
        if version is None:
            self.count("memory_v1")
            # v1's `used` counts the driver's reservation too: the value nvidia-smi does not show.
            used = gpu.used_v2 + gpu.reserved
            return pynvml.c_nvmlMemory_t(total=gpu.total, free=gpu.total - used, used=used)
        self.count("memory_v2")
        if not self.v2_supported:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)
        assert version == pynvml.nvmlMemory_v2
        if gpu is self.gpus[0] and self.calls["memory_v2"] in self.fail_reads:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
        free = gpu.total - gpu.reserved - gpu.used_v2
        return pynvml.c_nvmlMemory_v2_t(
            version=version, total=gpu.total, reserved=gpu.reserved, free=free, used=gpu.used_v2
        )

    def nvmlDeviceGetUtilizationRates(self, gpu: FakeGpu) -> Any:
        if gpu.utilization is None:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return pynvml.c_nvmlUtilization_t(gpu=gpu.utilization, memory=10)

    def _processes(self, gpu: FakeGpu, listed: list[tuple[int, int | None]]) -> list[Any]:
        if gpu.processes_error is not None:
            raise pynvml.NVMLError(gpu.processes_error)
        return [SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in listed]

    def nvmlDeviceGetComputeRunningProcesses(self, gpu: FakeGpu) -> list[Any]:
        return self._processes(gpu, gpu.compute)

    def nvmlDeviceGetGraphicsRunningProcesses(self, gpu: FakeGpu) -> list[Any]:
        return self._processes(gpu, gpu.graphics)

    def nvmlSystemGetProcessName(self, pid: int) -> str:
        if pid not in self.process_names:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)
        return self.process_names[pid]


@pytest.fixture
def sleepers() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Starts real processes for psutil to inspect; all are ended by their pid afterwards."""
    started: list[subprocess.Popen[str]] = []

    def start(*argv: str, code: str = "import time; time.sleep(120)") -> subprocess.Popen[str]:
        process = subprocess.Popen([sys.executable, "-c", code, *argv], stdout=subprocess.PIPE, text=True)
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()
        process.wait()


# ---------------------------------------------------------------- the sampler


@pytest.mark.skipif(nvml_works(), reason="this host has a working NVIDIA driver")
def test_without_gpu_the_sampler_says_so_and_stops_cleanly() -> None:
    with GpuSampler(GpuSamplerConfig(interval_s=0.05)) as sampler:
        wait_for(lambda: "NVML" in sampler.snapshot().reason)
        snapshot = sampler.snapshot()
        assert not snapshot.available
        assert snapshot.reason.startswith("No NVIDIA GPU on this host (NVML: ")
        assert any(cause in snapshot.reason for cause in ("NVML Shared Library Not Found", "Driver Not Loaded"))
        assert snapshot.devices == () and snapshot.history == ()
    assert not sampler.running
    assert sampler.nvml_reads == 0
    markdown = format_gpu_markdown(snapshot, now=time.time())
    assert "No NVIDIA GPU on this host" in markdown
    assert plot_update(snapshot, 300)["visible"] is False


def test_memory_comes_from_v2_and_vllm_processes_are_attributed(
    monkeypatch: pytest.MonkeyPatch, sleepers: Callable[..., subprocess.Popen[str]]
) -> None:
    by_cmdline = sleepers("--served-by", "vllm.entrypoints.openai.api_server")
    plain = sleepers("--unrelated-notebook")
    mentions = sleepers("--notebook", "/home/analyst/vllm-notes/compare_vllm_runs.ipynb")
    # vLLM's engine core retitles itself; its stand-in carries the title in its command line.
    engine_core = sleepers("--title", "VLLM::EngineCore").pid

    gib = GIB
    fake = FakeNvml(
        gpus=[
            FakeGpu(
                name="NVIDIA H100 80GB HBM3",
                total=80 * gib,
                used_v2=int(23.4 * gib),
                utilization=87,
                compute=[
                    (engine_core, 20 * gib),
                    (by_cmdline.pid, 2 * gib),
                    (plain.pid, gib),
                    (mentions.pid, gib),
                    (NO_PROCESS_PID, gib // 2),
                ],
                # The engine core also holds a graphics context: listed twice, counted once.
                graphics=[(engine_core, 20 * gib)],
            ),
            FakeGpu(
                name="NVIDIA H100 80GB HBM3",
                total=80 * gib,
                used_v2=gib,
                utilization=None,
                processes_error=pynvml.NVML_ERROR_NO_PERMISSION,
            ),
        ],
        process_names={NO_PROCESS_PID: "VLLM::Worker_TP1"},
    )
    fake.install(monkeypatch)

    with GpuSampler(GpuSamplerConfig(interval_s=0.05)) as sampler:
        wait_for(lambda: sampler.snapshot().available)
        snapshot = sampler.snapshot()
    assert fake.calls["nvmlInit"] == 1 and fake.calls["nvmlShutdown"] == 1

    first, second = snapshot.devices
    assert (first.used_bytes, first.total_bytes) == (int(23.4 * gib), 80 * gib)
    assert fake.calls["memory_v1"] == 0
    assert first.utilization_percent == 87 and second.utilization_percent is None
    by_pid = {process.pid: process for process in first.processes}
    assert set(by_pid) == {engine_core, by_cmdline.pid, plain.pid, mentions.pid, NO_PROCESS_PID}
    assert by_pid[engine_core].is_vllm, "the engine core's title names vLLM"
    assert by_pid[engine_core].used_bytes == 20 * gib
    assert by_pid[by_cmdline.pid].is_vllm, "a command line naming vllm is vLLM"
    assert not by_pid[plain.pid].is_vllm
    assert not by_pid[mentions.pid].is_vllm, "vllm inside a word names no vLLM program"
    assert by_pid[plain.pid].name.startswith("python")
    # Not visible to psutil (another pid namespace): NVML's name is used instead.
    assert by_pid[NO_PROCESS_PID].name == "VLLM::Worker_TP1"
    assert by_pid[NO_PROCESS_PID].is_vllm
    assert first.processes[0].pid == engine_core, "largest first"
    assert snapshot.vllm_used_bytes == 20 * gib + 2 * gib + gib // 2
    assert second.processes == () and second.processes_error == "Insufficient Permissions"

    text = format_device(first)
    assert text.startswith("**GPU 0 · NVIDIA H100 80GB HBM3**: 23.4 / 80.0 GiB (29%)")
    assert "utilisation 87%" in text
    assert "vLLM: 22.5 GiB (pid " in text
    assert f"pid {plain.pid} python" in text
    assert "utilisation n/a" in format_device(second)
    assert "GPU processes unknown (NVML: Insufficient Permissions)" in format_device(second)
    assert "vLLM on all GPUs: 22.5 GiB" in format_gpu_markdown(snapshot, now=snapshot.timestamp)


def test_a_real_vllm_servers_processes_are_recognised(monkeypatch: pytest.MonkeyPatch, minilm_server: Any) -> None:
    """The live server's own process tree, as NVML would list it on a GPU host."""
    import psutil

    launcher = psutil.Process(minilm_server.process.pid)
    tree = launcher.children(recursive=True)
    engine_core = next(p for p in tree if p.name().startswith("VLLM::EngineCore"))
    api_server = next(p for p in tree if "vllm.entrypoints" in " ".join(p.cmdline()))
    gib = GIB
    listed: list[tuple[int, int | None]] = [(engine_core.pid, 6 * gib), (api_server.pid, gib // 2), (os.getpid(), gib)]
    fake = FakeNvml(gpus=[FakeGpu(name="NVIDIA H100", total=80 * gib, used_v2=8 * gib, compute=listed)])
    fake.install(monkeypatch)

    # Recognised by name alone: the page knows the server only by its URL, never its pid.
    with GpuSampler(GpuSamplerConfig(interval_s=0.05)) as sampler:
        wait_for(lambda: sampler.snapshot().available)
    by_pid = {p.pid: p for p in sampler.snapshot().devices[0].processes}
    assert by_pid[engine_core.pid].name.startswith("VLLM::EngineCore")
    assert by_pid[engine_core.pid].is_vllm and by_pid[api_server.pid].is_vllm
    assert not by_pid[os.getpid()].is_vllm, "this test process is not vLLM"
    assert sampler.snapshot().vllm_used_bytes == 6 * gib + gib // 2


def test_old_driver_without_memory_v2_falls_back_to_v1_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gpu = FakeGpu(name="Tesla T4", total=16 * GIB, used_v2=3 * GIB)
    fake = FakeNvml(gpus=[gpu], v2_supported=False)
    fake.install(monkeypatch)
    with GpuSampler(GpuSamplerConfig(interval_s=0.02)) as sampler:
        wait_for(lambda: sampler.nvml_reads >= 3)
    snapshot = sampler.snapshot()
    assert snapshot.devices[0].used_bytes == gpu.used_v2 + gpu.reserved
    assert fake.calls["memory_v2"] == 1
    assert fake.calls["memory_v1"] >= 3


def test_history_is_bounded_and_ordered(monkeypatch: pytest.MonkeyPatch) -> None:
    gpu = FakeGpu(name="NVIDIA L4", total=24 * GIB, used_v2=0)
    fake = FakeNvml(gpus=[gpu])
    fake.install(monkeypatch)
    sampler = GpuSampler(GpuSamplerConfig(interval_s=0.01, history_s=0.05))
    assert sampler.history_length == 5

    def grow() -> None:  # memory rises by 1 GiB per read, so history order is checkable
        gpu.used_v2 = min(gpu.used_v2 + GIB, gpu.total)

    original = fake.nvmlDeviceGetMemoryInfo

    def rising(handle: FakeGpu, version: int | None = None) -> Any:
        grow()
        return original(handle, version=version)

    monkeypatch.setattr(pynvml, "nvmlDeviceGetMemoryInfo", rising)
    with sampler:
        wait_for(lambda: sampler.nvml_reads >= 12)
    snapshot = sampler.snapshot()
    assert sampler.nvml_reads >= 12
    assert len(snapshot.history) == 5
    stamps = [point.timestamp for point in snapshot.history]
    assert stamps == sorted(stamps)
    used = [point.used_bytes[0] for point in snapshot.history]
    assert used == [used[0] + i * GIB for i in range(5)]
    assert used[-1] == snapshot.devices[0].used_bytes


def test_many_viewers_do_not_multiply_nvml_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeNvml(gpus=[FakeGpu(name="A", total=GIB, used_v2=1), FakeGpu("B", GIB, 2)])
    fake.install(monkeypatch)
    viewers, views_each = 32, 200
    views = Counter[int]()

    def viewer(number: int) -> None:
        for _ in range(views_each):
            assert sampler.snapshot() is not None
            views[number] += 1

    with GpuSampler(GpuSamplerConfig(interval_s=0.05)) as sampler:
        wait_for(lambda: sampler.nvml_reads >= 1)
        threads = [threading.Thread(target=viewer, args=(n,), name=f"viewer-{n}") for n in range(viewers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert sum(views.values()) == viewers * views_each
    # Every NVML call came from the sampler thread, one memory read per GPU per pass,
    # however many snapshots the viewers took meanwhile.
    assert fake.callers == {"gpu-sampler"}
    assert fake.calls["memory_v2"] == 2 * sampler.nvml_reads


def test_a_failed_read_is_reported_and_sampling_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeNvml(gpus=[FakeGpu(name="A100", total=40 * GIB, used_v2=GIB)], fail_reads={3})
    fake.install(monkeypatch)
    seen: list[GpuSnapshot] = []
    # Snapshots are watched every 10 ms: slower sampling lets the watcher see each one.
    with GpuSampler(GpuSamplerConfig(interval_s=0.1)) as sampler:

        def recovered() -> bool:
            snapshot = sampler.snapshot()
            if not seen or seen[-1] is not snapshot:
                seen.append(snapshot)
            return sampler.nvml_reads >= 6 and snapshot.available

        wait_for(recovered)
    failed = [s for s in seen if not s.available and s.history]
    assert failed, "the failed pass was published"
    assert failed[0].reason == "NVML read failed: GPU is lost"
    assert failed[0].device_names == ("A100",)
    assert seen[-1].available and len(seen[-1].history) >= 4
    assert fake.calls["memory_v1"] == 0, "a transient failure does not switch to v1"


def test_start_and_stop_are_idempotent(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeNvml(gpus=[FakeGpu(name="A", total=GIB, used_v2=1)])
    fake.install(monkeypatch)
    sampler = GpuSampler(GpuSamplerConfig(interval_s=0.02))
    sampler.stop()  # stopping a sampler that never started is harmless
    sampler.start()
    sampler.start()
    wait_for(lambda: sampler.nvml_reads >= 2)
    threads = [t for t in threading.enumerate() if t.name == "gpu-sampler"]
    assert len(threads) == 1
    sampler.stop()
    sampler.stop()
    # The sampler thread has ended (stop joins it), so no read can follow.
    assert not sampler.running and not threads[0].is_alive()
    assert fake.calls["nvmlInit"] == 1 and fake.calls["nvmlShutdown"] == 1


def test_a_driver_without_gpus_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeNvml(gpus=[]).install(monkeypatch)
    with GpuSampler(GpuSamplerConfig(interval_s=0.02)) as sampler:
        wait_for(lambda: "driver" in sampler.snapshot().reason)
    assert sampler.snapshot().reason == "The NVIDIA driver is loaded but sees no GPU"


# ---------------------------------------------------------------- formatting


def test_format_memory() -> None:
    assert format_memory(int(23.4 * GIB), int(79.6 * GIB)) == "23.4 / 79.6 GiB (29%)"
    assert format_memory(0, 80 * GIB) == "0.0 / 80.0 GiB (0%)"
    assert format_memory(80 * GIB, 80 * GIB) == "80.0 / 80.0 GiB (100%)"
    assert format_memory(0, 0) == "0.0 / 0.0 GiB (0%)"


def test_device_text_escapes_names_and_reports_missing_numbers() -> None:
    device = GpuDevice(
        index=1,
        name="GPU *with* <b>odd</b> name",
        used_bytes=GIB,
        total_bytes=4 * GIB,
        utilization_percent=5,
        processes=(
            GpuProcess(pid=7, name="VLLM::EngineCore", used_bytes=None, is_vllm=True),
            *(GpuProcess(pid=p, name="x_y", used_bytes=GIB, is_vllm=False) for p in range(4)),
        ),
    )
    text = format_device(device)
    # Markdown's own characters backslash-escaped, HTML's as entities: shown, never rendered.
    assert "GPU 1 · GPU \\*with\\* &lt;b&gt;odd&lt;/b&gt; name" in text
    assert "1.0 / 4.0 GiB (25%)" in text
    assert "vLLM: memory not reported by NVML (pid 7 VLLM::EngineCore)" in text
    assert "Other processes: 4.0 GiB (pid 0 x\\_y, pid 1 x\\_y, pid 2 x\\_y and 1 more)" in text
    empty = GpuDevice(index=0, name="A", used_bytes=0, total_bytes=GIB, utilization_percent=0)
    assert "vLLM: no vLLM process on this GPU" in format_device(empty)


def test_stale_snapshot_is_flagged() -> None:
    point = HistoryPoint(timestamp=100.0, used_bytes=(GIB,))
    device = GpuDevice(index=0, name="A", used_bytes=GIB, total_bytes=2 * GIB, utilization_percent=1)
    snapshot = GpuSnapshot(
        timestamp=100.0,
        available=True,
        reason="",
        devices=(device,),
        history=(point,),
        device_names=("A",),
    )
    assert "sampler is not running" not in format_gpu_markdown(snapshot, now=101.0)
    assert "Last GPU sample 30 s ago" in format_gpu_markdown(snapshot, now=130.0)


def test_history_frame_has_one_row_per_sample_and_gpu() -> None:
    history = tuple(HistoryPoint(timestamp=float(t), used_bytes=(t * GIB, 2 * t * GIB)) for t in (10, 11, 12))
    snapshot = GpuSnapshot(timestamp=12.0, available=True, reason="", history=history, device_names=("A", "B"))
    frame = history_frame(snapshot)
    assert list(frame.columns) == ["seconds ago", "used GiB", "GPU"]
    assert len(frame) == 6
    rows = {(r["GPU"], r["seconds ago"]): r["used GiB"] for r in frame.to_dict("records")}
    assert rows[("GPU 0: A", -2.0)] == 10.0
    assert rows[("GPU 1: B", 0.0)] == 24.0
    update = plot_update(snapshot, history_s=300)
    assert update["visible"] is True and update["x_lim"] == [-300, 0]


# ---------------------------------------------------------------- the panel in a real Gradio app


@dataclass(frozen=True)
class PanelSettings:
    server_url: str
    api_key: str | None = None
    timeout: float = 30.0


def test_refresh_skips_a_full_queue_and_never_runs_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the only Rerank slot busy and the queue full, the panel still refreshes at once."""
    import gradio as gr
    from gradio_client import Client
    from gradio_client.utils import Status

    from webui.panel import build_monitor_panel

    fake = FakeNvml(gpus=[FakeGpu(name="NVIDIA H100", total=80 * GIB, used_v2=8 * GIB)])
    fake.install(monkeypatch)
    release = threading.Event()

    def slow_rerank(text: str) -> str:
        release.wait(180)  # held until the test releases it, past the slowest queue join below
        return text

    sampler = GpuSampler(GpuSamplerConfig(interval_s=0.05)).start()
    # Nothing listens on port 9 (discard): the engine side must report that in one line.
    with gr.Blocks() as demo:
        box = gr.Textbox()
        gr.Button("Rerank").click(slow_rerank, box, box, api_name="rerank", concurrency_limit=1)
        panel = build_monitor_panel(PanelSettings("http://127.0.0.1:9"), sampler)
    demo.queue(default_concurrency_limit=1, max_size=1, api_open=False)
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port())
    client = Client(url, verbose=False)
    try:
        dependency = next(d for d in demo.config["dependencies"] if d.get("api_name") == "monitor_refresh")
        queue_flag = dependency["queue"]
        show_progress = dependency["show_progress"]
        assert dependency["targets"] == [(panel.timer._id, "tick")]

        def queued() -> int:
            status = httpx.get(f"{url}gradio_api/queue/status", timeout=5).json()
            return int(status["queue_size"])

        # One after the other: sent together, the second can reach the one-place queue while
        # the first still waits in it, and be refused (a full run failed so once). gradio_client
        # joins the queue from its own threads: on a loaded 2-core machine that took 20 s once.
        running = client.submit("a", api_name="/rerank")
        wait_until(lambda: running.status().code == Status.PROCESSING, "the first rerank to run", 90, 0.01)
        waiting = client.submit("b", api_name="/rerank")
        wait_until(lambda: queued() == 1, "the second rerank to wait in the page's queue", 90, 0.01)
        with pytest.raises(Exception, match=r"[Qq]ueue is full"):
            client.predict("c", api_name="/rerank")

        for _ in range(5):  # what the browser's timer posts: a direct call, no queue
            answer = httpx.post(
                f"{url}gradio_api/run/monitor_refresh",
                json={"data": [], "session_hash": "monitor-test"},
                timeout=10,
            )
            assert answer.status_code == 200, answer.text
        gpu_text, plot, engine_text = answer.json()["data"]
        assert "GPU 0 · NVIDIA H100" in gpu_text and "8.0 / 80.0 GiB (10%)" in gpu_text
        assert plot["visible"] is True
        assert engine_text.startswith("**Engine unreachable.** Cannot connect")
        # The refreshes answered while the only slot is held and the queue is full, and none
        # of them touched NVML: only the sampler thread did.
        assert fake.callers == {"gpu-sampler"}
        assert not running.done() and not waiting.done()
        assert queue_flag is False and show_progress == "hidden"
    finally:
        release.set()
        client.close()
        demo.close()
        sampler.stop()
