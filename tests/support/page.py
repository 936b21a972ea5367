"""The page in a test: launched in-process on a free port and driven through gradio_client,
plus small ASGI apps (proxies in front of a real server) served on a loopback thread."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import httpx
from gradio_client import Client
from starlette.requests import Request
from starlette.responses import Response

from bench.server_process import serving as serving  # the one in-thread server, shared with bench/
from tests.support.server_process import free_port
from webui.app import RerankDemo, create_demo
from webui.settings import Settings


class LaunchedPage:
    """The page on a free loopback port; `client` (gradio_client) connects on first use, so a
    page behind a login can be launched too."""

    def __init__(self, demo: RerankDemo, url: str, settings: Settings) -> None:
        self.demo, self.url, self.settings = demo, url, settings
        self._client: Client | None = None

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = Client(self.url, verbose=False)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        self.demo.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} url={self.url!r}>"


PageT = TypeVar("PageT", bound=LaunchedPage)


GRADIO_SELF_CHECK_FAILED = "When localhost is not accessible"
"""What Gradio's launch() raises when its one look at its own new page (gradio.networking.url_ok)
gets no answer within 3 s: on a loaded machine the first answer can take longer."""


@contextlib.contextmanager
def launched(settings: Settings, page_type: type[PageT] = LaunchedPage) -> Iterator[PageT]:  # type: ignore[assignment]
    """The page for `settings`, closed (client and server) when the block ends. A page whose
    start failed Gradio's self-check is closed and started afresh, up to three times."""
    for attempt in range(3):
        demo = create_demo(settings)
        try:
            _, url, _ = demo.launch(prevent_thread_lock=True, server_port=free_port(), quiet=True)
            break
        except ValueError as error:
            demo.close()
            if GRADIO_SELF_CHECK_FAILED not in str(error) or attempt == 2:
                raise
    page = page_type(demo, url, settings)
    try:
        yield page
    finally:
        page.close()


def queued(page_url: str) -> int:
    """Events waiting in the page's queue now (Gradio's own count, not counting those running)."""
    status = httpx.get(f"{page_url}gradio_api/queue/status", timeout=10).json()
    return int(status["queue_size"])


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 120.0, interval: float = 0.05) -> None:
    """Poll `condition` until it holds; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"gave up after {timeout:g} s waiting for {what}"
        time.sleep(interval)


async def forward(request: Request, upstream: str, timeout: float) -> Response:
    """Pass a request on to `upstream` unchanged and its answer back: the body of a test proxy."""
    async with httpx.AsyncClient(base_url=upstream, timeout=timeout) as client:
        answer = await client.request(
            request.method,
            request.url.path,
            content=await request.body(),
            headers={"content-type": request.headers.get("content-type", "application/json")},
        )
    return Response(answer.content, answer.status_code, media_type=answer.headers.get("content-type"))
