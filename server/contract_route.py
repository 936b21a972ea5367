"""Publish the server's `ServedContract` at `CONTRACT_PATH`, so the page learns from the
server itself which scorer it serves and which limits it was planned for.

command.py installs this with `--middleware` on every server it starts and passes the
contract in the environment variable `RERANK_CONTRACT` (JSON). With `--api-key`, the key
middleware runs first, so the contract answers only to callers with the key, like every
other route but /health.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from server.contract import CONTRACT_PATH

CONTRACT_ENV = "RERANK_CONTRACT"


async def publish_contract(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    published = os.environ.get(CONTRACT_ENV)
    if request.url.path != CONTRACT_PATH or published is None:
        return await call_next(request)
    if request.method != "GET":
        return JSONResponse({"error": {"message": "use GET", "code": 405}}, status_code=405)
    return JSONResponse(json.loads(published))
