"""`bench.load_page`'s simulated people: users who rerank and retry when told "busy", and the
open tabs whose timers tick, each sorted into accepted, refused or failed.

    await user(number, config, workloads, deadline, tally)      # gradio_client, one session each
    await viewer(number, page_url, ticks, deadline, tally)      # the page's own HTTP protocol
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx
from gradio_client import Client
from gradio_client.utils import QueueError

from bench.load_page_config import LoadConfig
from bench.load_page_inputs import Workload, check_table
from bench.page_http import RUN_PREDICT, run_predict_body

_SERVICE = re.compile(r" in \*\*(?P<seconds>[\d.]+) s\*\*")
"""The ranking time the page reports in its status line."""


@dataclass
class Outcome:
    kind: str
    """accepted, refused or failed."""
    end_to_end_s: float
    wait_s: float | None = None
    """Time in the page's queue: end to end minus the time the page says the ranking took."""
    detail: str = ""


@dataclass
class Tally:
    outcomes: list[Outcome] = field(default_factory=list)
    ticks: int = 0
    tick_retries: int = 0
    """Ticks sent again after the page closed an idle keep-alive connection, as browsers resend."""
    tick_failures: list[str] = field(default_factory=list)


async def one_request(client: Client, workload: Workload) -> Outcome:
    started = time.perf_counter()
    job = client.submit(
        workload.query, "", "\n".join(workload.documents), "One per line", None, None, 0, api_name="/rerank"
    )
    try:
        result = await asyncio.wrap_future(job.future)
    except QueueError as error:
        return Outcome("refused", time.perf_counter() - started, detail=str(error))
    except Exception as error:  # every other failure is counted and described, not raised
        return Outcome("failed", time.perf_counter() - started, detail=f"{type(error).__name__}: {error}"[:300])
    elapsed = time.perf_counter() - started
    problem = check_table(result, workload)
    if problem is not None:
        return Outcome("failed", elapsed, detail=problem)
    service = _SERVICE.search(result[1])
    wait = max(0.0, elapsed - float(service["seconds"])) if service else None
    return Outcome("accepted", elapsed, wait_s=wait)


async def user(number: int, config: LoadConfig, workloads: Sequence[Workload], deadline: float, tally: Tally) -> None:
    rng = random.Random(config.seed * 1000 + number)
    client = await asyncio.to_thread(Client, config.page_url, verbose=False, download_files=False)
    try:
        turn = number
        while time.monotonic() < deadline:
            outcome = await one_request(client, workloads[turn % len(workloads)])
            tally.outcomes.append(outcome)
            if outcome.kind == "refused":
                await asyncio.sleep(config.busy_retry_s)
                continue
            turn += 1
            await asyncio.sleep(rng.uniform(0, config.think_s))
    finally:
        await asyncio.to_thread(client.close)


async def viewer(number: int, page_url: str, ticks: Sequence[tuple[int, float]], deadline: float, tally: Tally) -> None:
    """One open tab's timers, each on its own beat, sent as the browser sends them."""
    async with httpx.AsyncClient(base_url=page_url, timeout=30) as http:

        async def beat(fn_index: int, interval: float) -> None:
            await asyncio.sleep(random.Random(number).uniform(0, interval))
            while time.monotonic() < deadline:
                body = run_predict_body(fn_index, [], f"load-viewer-{number}")
                for attempt in range(2):
                    try:
                        answer = await http.post(RUN_PREDICT, json=body)
                    except (httpx.ReadError, httpx.RemoteProtocolError) as error:
                        # uvicorn closes connections idle for 5 s, the banner's own interval: the
                        # request can cross the close. A browser resends once; so does this.
                        if attempt == 0:
                            tally.tick_retries += 1
                            continue
                        tally.tick_failures.append(f"{type(error).__name__}: {error}"[:160])
                    except httpx.HTTPError as error:
                        tally.tick_failures.append(f"{type(error).__name__}: {error}"[:160])
                    else:
                        if answer.status_code != 200:
                            tally.tick_failures.append(f"{answer.status_code} {answer.text[:120]}")
                    break
                tally.ticks += 1
                await asyncio.sleep(interval)

        await asyncio.gather(*(beat(fn_index, interval) for fn_index, interval in ticks))
