"""Run the page beside a served profile and compare its GPU panel with nvidia-smi.

The page is started as a user starts it (`python -m webui --server-url URL`); its panel is
read through gradio_client (endpoint /monitor_refresh, the panel's timer tick), falling back
to Gradio's HTTP route if the client will not call that undocumented endpoint. The server
is idle meanwhile, so both readings see the same memory. Passes when used and total memory
agree within 2% and the panel names a vLLM process that nvidia-smi lists on the GPU.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from bench.gpu_memory import MemorySampler

REPO = Path(__file__).resolve().parent.parent
PAGE_PORT = 7871
GIB_MIB = 1024
_MEMORY = re.compile(r"\*\*GPU 0 [^*]*\*\*: (?P<used>[\d.]+) / (?P<total>[\d.]+) GiB")
_VLLM = re.compile(r"vLLM: (?P<gib>[\d.]+) GiB \((?P<who>[^)]*)\)")


def _smi() -> dict[str, Any]:
    gpu = subprocess.run(
        ["nvidia-smi", "--query-gpu=memory.used,memory.total", "--format=csv,noheader,nounits"],
        capture_output=True, text=True, check=True,
    ).stdout.split("\n")[0]  # fmt: skip
    used, total = (int(x) for x in gpu.split(","))
    apps = subprocess.run(
        ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    pids = {int(line.split(",")[0]): int(line.split(",")[1]) for line in apps.splitlines() if line.strip()}
    return {"used_mib": used, "total_mib": total, "processes_mib": pids}


def _panel_markdown(url: str) -> tuple[str, str]:
    """(GPU markdown, how it was read)."""
    try:
        from gradio_client import Client

        client = Client(url, verbose=False)
        try:
            result = client.predict(api_name="/monitor_refresh")
        finally:
            client.close()
        return str(result[0]), "gradio_client /monitor_refresh"
    except Exception as exc:  # an undocumented endpoint the client will not call: use the route
        response = httpx.post(f"{url}gradio_api/run/monitor_refresh", json={"data": []}, timeout=30)
        response.raise_for_status()
        return str(response.json()["data"][0]), f"HTTP /gradio_api/run/monitor_refresh ({type(exc).__name__})"


def _wait_page(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the page exited with code {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the page did not answer on {url}")


def check_page(server_url: str, sampler: MemorySampler, log_path: Path | None = None) -> dict[str, Any]:
    url = f"http://127.0.0.1:{PAGE_PORT}/"
    log = (log_path or Path("/dev/null")).open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "webui", "--server-url", server_url, "--port", str(PAGE_PORT)],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait_page(url, proc)
        time.sleep(2.5)  # the panel's sampler reads NVML once a second
        markdown, how = _panel_markdown(url)
        smi = _smi()
    except Exception as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
    result: dict[str, Any] = {"read_by": how, "panel": markdown.split("\n")[0:3], "nvidia_smi": smi}
    memory, vllm = _MEMORY.search(markdown), _VLLM.search(markdown)
    if memory is None:
        return {**result, "ok": False, "error": "no GPU memory line in the panel"}
    used_mib, total_mib = float(memory["used"]) * GIB_MIB, float(memory["total"]) * GIB_MIB
    result["used_diff_pct"] = round(100 * abs(used_mib - smi["used_mib"]) / smi["used_mib"], 2)
    result["total_diff_pct"] = round(100 * abs(total_mib - smi["total_mib"]) / smi["total_mib"], 2)
    panel_pids = {int(p) for p in re.findall(r"pid (\d+)", vllm["who"])} if vllm else set()
    result["vllm_pids_on_gpu"] = sorted(panel_pids & set(smi["processes_mib"]))
    result["ok"] = bool(result["used_diff_pct"] <= 2 and result["total_diff_pct"] <= 2 and result["vllm_pids_on_gpu"])
    return result
