"""The page in a test: launched in-process on a free port and driven through gradio_client,
plus small ASGI apps (proxies in front of a real server) served on a loopback thread."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TypeVar

import httpx
import uvicorn
from gradio_client import Client
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp

from tests.support.server_process import free_port
from webui.app import RerankDemo, create_demo
from webui.settings import Settings


@dataclass
class LaunchedPage:
    demo: RerankDemo
    url: str
    client: Client
    settings: Settings


PageT = TypeVar("PageT", bound=LaunchedPage)


@contextlib.contextmanager
def launched(settings: Settings, page_type: type[PageT]) -> Iterator[PageT]:
    """The page for `settings`, closed (client and server) when the block ends."""
    demo = create_demo(settings)
    _, url, _ = demo.launch(prevent_thread_lock=True, server_port=free_port(), quiet=True)
    client = Client(url, verbose=False)
    try:
        yield page_type(demo, url, client, settings)
    finally:
        client.close()
        demo.close()


@contextlib.contextmanager
def serving(app: ASGIApp) -> Iterator[str]:
    """Serve `app` on a free loopback port in a thread; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


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
