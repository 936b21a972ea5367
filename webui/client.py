"""The page's only way to reach the rerank server: one shared httpx.AsyncClient.

Errors, each a one-line message for the analyst (never the server's address: that is logged
for the operator instead):

    RerankError
    ├── ServerUnavailable   nothing answers at the URL (not started, starting, or down)
    ├── ServerTimeout       the server did not answer within the timeout
    ├── RequestRejected     4xx: the server's own message (too long, bad key, unknown model)
    │   ├── RouteNotFound   404: a route this server does not have
    │   └── PromptTooLong   a text longer than the model's window
    └── ServerFailed        5xx or an answer the page cannot read

The pool holds at most `max_connections` connections, set to the page's concurrency limit, so
the page can never have more requests in flight at the server than jobs it lets run.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from server.contract import CONTRACT_PATH, ServedContract

logger = logging.getLogger(__name__)


class RerankError(Exception):
    """A failure talking to the server; str(error) is one line for the analyst."""


class ServerUnavailable(RerankError):
    pass


class ServerTimeout(RerankError):
    pass


class RequestRejected(RerankError):
    pass


class ServerFailed(RerankError):
    pass


class RouteNotFound(RequestRejected):
    """404: the server has no such route (a vLLM that publishes no rerank contract)."""


class PromptTooLong(RequestRejected):
    """A text did not fit the model's window (vLLM's "maximum context length" 400)."""


@dataclass(frozen=True)
class ModelInfo:
    model_id: str
    max_model_len: int
    contract: ServedContract
    """What the server publishes about its scorer and limits (server/contract.py)."""


@dataclass(frozen=True)
class RerankAnswer:
    scores: tuple[float, ...]
    """relevance_score per document, in the order the documents were sent."""
    prompt_tokens: int


@dataclass(frozen=True)
class EmbeddingAnswer:
    vectors: tuple[tuple[float, ...], ...]
    """One vector per text, in the order the texts were sent."""
    prompt_tokens: int


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def server_message(response: httpx.Response) -> str:
    """The server's own explanation from vLLM's or FastAPI's error bodies, else the status text."""
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return _one_line(response.text) or response.reason_phrase
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return _one_line(error["message"])
        if isinstance(error, str):
            return _one_line(error)
        detail = body.get("detail")
        if isinstance(detail, str):
            return _one_line(detail)
        if isinstance(detail, list) and detail and isinstance(detail[0], dict):
            return _one_line(str(detail[0].get("msg", detail[0])))
    return _one_line(response.text) or response.reason_phrase


def session_header(query: str, instruction: str | None) -> dict[str, str]:
    """X-Session-Id, the same for every request of one query and instruction.

    A fleet router (vllm-router, consistent hash) sends equal ids to the same server, so the
    passages of one job share that server's prefix cache; one server ignores the header. A
    digest, so that no query text reaches a proxy's or router's logs.
    """
    digest = hashlib.sha256(f"{instruction or ''}\0{query}".encode()).hexdigest()[:32]
    return {"X-Session-Id": digest}


class RerankClient:
    """Typed calls to the server's /v1/models, /tokenize, /v1/rerank and /v1/embeddings.

    The AsyncClient is made on first use inside Gradio's event loop (a client cannot move
    between loops), and remade if the page is relaunched on a new loop.
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float,
        max_connections: int,
        api_key: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        rerank_path: str = "/v1/rerank",
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.rerank_path = rerank_path
        """/v2/rerank behind vllm-router (webui/settings.py says why)."""
        self._timeout = timeout
        self._limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._model: tuple[float, ModelInfo] | None = None
        """(when, what) of the last /v1/models answer."""
        self._reported_down = False

    @property
    def limits(self) -> httpx.Limits:
        return self._limits

    def _http(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client = httpx.AsyncClient(
                base_url=self.base_url,
                timeout=self._timeout,
                limits=self._limits,
                headers=self._headers,
                transport=self._transport,
            )
            self._loop = loop
        return self._client

    async def _request(
        self,
        method: str,
        path: str,
        payload: dict[str, Any] | None = None,
        timeout: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        seconds = self._timeout if timeout is None else timeout
        try:
            response = await self._http().request(method, path, json=payload, timeout=seconds, headers=headers)
        except httpx.TimeoutException:
            raise ServerTimeout(
                f"The server did not answer within {seconds:g} s; try fewer or shorter documents."
            ) from None
        except httpx.TransportError as error:
            # The address is for the operator's console, never for the page: on a shared link it
            # means nothing to the analyst and tells a stranger about the host.
            if not self._reported_down:  # once per outage, not once per banner tick of every tab
                logger.warning("The rerank server at %s is not reachable (%s): %r", self.base_url, path, error)
                self._reported_down = True
            raise ServerUnavailable("The rerank server is not reachable: it is starting up or down.") from None
        if self._reported_down:
            logger.warning("The rerank server at %s answers again.", self.base_url)
            self._reported_down = False
        if response.status_code == 401:
            raise RequestRejected("The server refused the API key (401); check --api-key / RERANK_API_KEY.")
        if response.status_code == 400 and "maximum context length" in response.text:
            raise PromptTooLong(f"The server refused a text as too long: {server_message(response)}")
        if response.status_code == 404:
            raise RouteNotFound(f"The server has no route {path} (404): {server_message(response)}")
        if 400 <= response.status_code < 500:
            raise RequestRejected(
                f"The server refused the request ({response.status_code}): {server_message(response)}"
            )
        if response.status_code >= 500:
            raise ServerFailed(f"The server failed ({response.status_code}): {server_message(response)}")
        try:
            return response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ServerFailed(f"The server's answer to {path} was not JSON.") from None

    async def model_info(self, timeout: float | None = None, max_age: float = 0.0) -> ModelInfo:
        """The served model; `timeout` shortens the wait for status checks that must stay quick.

        `max_age` > 0 accepts the last answer if it is that recent: the page's banner asks
        every few seconds anyway, and a rerank then saves a round trip.
        """
        if self._model is not None and time.monotonic() - self._model[0] <= max_age:
            return self._model[1]
        self._model = None
        body = await self._request("GET", "/v1/models", timeout=timeout)
        try:
            first = body["data"][0]
            model_id, max_model_len = str(first["id"]), int(first["max_model_len"])
        except (KeyError, IndexError, TypeError, ValueError):
            raise ServerFailed("The server's /v1/models answer lists no model with a max_model_len.") from None
        info = ModelInfo(model_id, max_model_len, await self.served_contract(timeout))
        self._model = (time.monotonic(), info)
        return info

    async def served_contract(self, timeout: float | None = None) -> ServedContract:
        """The server's published contract; a server that publishes none (a vLLM not started
        by this project) is taken as a plain scorer with the default limits."""
        try:
            body = await self._request("GET", CONTRACT_PATH, timeout=timeout)
        except RouteNotFound:
            return ServedContract()
        try:
            return ServedContract.from_json(body)
        except ValueError as error:
            raise ServerFailed(f"The server's {CONTRACT_PATH} answer is {error}.") from None

    async def count_tokens(self, model: str, text: str) -> int:
        body = await self._request("POST", "/tokenize", {"model": model, "prompt": text})
        try:
            return int(body["count"])
        except (KeyError, TypeError, ValueError):
            raise ServerFailed("The server's /tokenize answer has no token count.") from None

    async def rerank(
        self,
        model: str,
        query: str,
        documents: Sequence[str],
        instruction: str | None = None,
        priority: int | None = None,
    ) -> RerankAnswer:
        """`priority` (vLLM's request field, lower first) only for a server whose contract
        says it schedules by priority: any other refuses a priority other than 0."""
        payload: dict[str, Any] = {"model": model, "query": query, "documents": list(documents)}
        if instruction is not None:
            payload["instruction"] = instruction
        if priority is not None:
            payload["priority"] = priority
        body = await self._request("POST", self.rerank_path, payload, headers=session_header(query, instruction))
        try:
            scores: list[float | None] = [None] * len(documents)
            for result in body["results"]:
                scores[int(result["index"])] = float(result["relevance_score"])
            prompt_tokens = int((body.get("usage") or {}).get("prompt_tokens", 0))
        except (KeyError, IndexError, TypeError, ValueError):
            raise ServerFailed(f"The server's {self.rerank_path} answer could not be read.") from None
        if any(score is None for score in scores):
            raise ServerFailed(f"The server's {self.rerank_path} answer left out some documents.")
        return RerankAnswer(scores=tuple(score for score in scores if score is not None), prompt_tokens=prompt_tokens)

    async def embed(
        self, model: str, texts: Sequence[str], priority: int | None = None, query: str = ""
    ) -> EmbeddingAnswer:
        """Vectors of texts through /v1/embeddings (an embedding model's scorer); `priority`
        as for `rerank`; `query`, the job's, keeps its calls on one server of a fleet."""
        payload: dict[str, Any] = {"model": model, "input": list(texts), "encoding_format": "float"}
        if priority is not None:
            payload["priority"] = priority
        body = await self._request("POST", "/v1/embeddings", payload, headers=session_header(query, None))
        try:
            vectors: list[tuple[float, ...] | None] = [None] * len(texts)
            for item in body["data"]:
                vectors[int(item["index"])] = tuple(float(value) for value in item["embedding"])
            prompt_tokens = int((body.get("usage") or {}).get("prompt_tokens", 0))
        except (KeyError, IndexError, TypeError, ValueError):
            raise ServerFailed("The server's /v1/embeddings answer could not be read.") from None
        if any(vector is None for vector in vectors):
            raise ServerFailed("The server's /v1/embeddings answer left out some texts.")
        return EmbeddingAnswer(tuple(vector for vector in vectors if vector is not None), prompt_tokens)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
            self._loop = None
