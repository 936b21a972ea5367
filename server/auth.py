"""Bearer-key check on every route of the vLLM server except /health.

vLLM's own --api-key guards only /v1, /v2 and /inference, leaving /rerank, /score and
/pooling open. command.py installs this with `--middleware` whenever a key is set; the
key travels in VLLM_API_KEY so it never shows in `ps`.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

OPEN_PATHS = frozenset({"/health"})
"""Liveness only: launchers poll it before they have a key to send."""


async def require_api_key(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    if request.method == "OPTIONS" or request.url.path in OPEN_PATHS:
        return await call_next(request)
    if not bearer_matches(request.headers.get("authorization", ""), os.environ.get("VLLM_API_KEY", "")):
        return JSONResponse({"error": {"message": "missing or wrong API key", "code": 401}}, status_code=401)
    return await call_next(request)


def bearer_matches(authorization: str, expected: str) -> bool:
    """Is the `Authorization` header value "Bearer <expected>"? Never true for an empty key."""
    scheme, _, given = authorization.partition(" ")
    # Compare digests of equal length in constant time.
    return (
        bool(expected)
        and scheme.lower() == "bearer"
        and secrets.compare_digest(hashlib.sha256(given.encode()).digest(), hashlib.sha256(expected.encode()).digest())
    )
