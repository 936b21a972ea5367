"""Is the server at a URL a reranker? For `launch.sh --server-url`, which starts no server
of its own and should fail at once, in one line, when pointed at the wrong thing."""

from __future__ import annotations

from webui.client import RerankClient, RerankError
from webui.settings import Settings


async def check_reranker(settings: Settings) -> str:
    """A one-line description of the served model; RerankError with the reason otherwise."""
    client = RerankClient(
        settings.server_url,
        timeout=settings.timeout,
        max_connections=1,
        api_key=settings.api_key,
        rerank_path=settings.rerank_path,
    )
    try:
        info = await client.model_info()
        try:
            await client.rerank(info.model_id, "is this a reranker?", ["A reranker gives this pair a score."])
        except RerankError as error:
            raise RerankError(f"{info.model_id} at {settings.server_url} does not rerank: {error}") from None
        return f"{info.model_id} at {settings.server_url} reranks (window {info.max_model_len} tokens)"
    finally:
        await client.aclose()
