"""RerankClient against httpx.MockTransport: request shapes, answer parsing, typed errors."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from server.contract import Limits, Scorer, ServedContract
from webui.client import (
    ModelInfo,
    PromptTooLong,
    RequestRejected,
    RerankClient,
    ServerFailed,
    ServerTimeout,
    ServerUnavailable,
)

Handler = Callable[[httpx.Request], httpx.Response]


def make_client(handler: Handler, *, api_key: str | None = None, timeout: float = 3.0) -> RerankClient:
    return RerankClient(
        "http://rerank.test/",
        timeout=timeout,
        max_connections=2,
        api_key=api_key,
        transport=httpx.MockTransport(handler),
    )


def run(client: RerankClient, call: Callable[[RerankClient], Any]) -> Any:
    async def main() -> Any:
        try:
            return await call(client)
        finally:
            await client.aclose()

    return asyncio.run(main())


def test_rerank_sends_raw_texts_and_returns_scores_in_input_order() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        body = {
            "results": [
                {"index": 2, "relevance_score": 0.9, "document": {"text": "c"}},
                {"index": 0, "relevance_score": 0.5, "document": {"text": "a"}},
                {"index": 1, "relevance_score": 0.1, "document": {"text": "b"}},
            ],
            "usage": {"prompt_tokens": 42, "total_tokens": 42},
        }
        return httpx.Response(200, json=body)

    answer = run(make_client(handler, api_key="k3y"), lambda c: c.rerank("m", "q", ["a", "b", "c"], instruction="inst"))
    assert answer.scores == (0.5, 0.1, 0.9) and answer.prompt_tokens == 42
    request = seen[0]
    assert request.method == "POST" and request.url == "http://rerank.test/v1/rerank"
    assert request.headers["authorization"] == "Bearer k3y"
    assert json.loads(request.content) == {
        "model": "m",
        "query": "q",
        "documents": ["a", "b", "c"],
        "instruction": "inst",
    }


def test_instruction_and_key_are_left_out_when_not_set() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200, json={"results": [{"index": 0, "relevance_score": 0.3}], "usage": {"prompt_tokens": 3}}
        )

    run(make_client(handler), lambda c: c.rerank("m", "q", ["a"]))
    assert "instruction" not in json.loads(seen[0].content)
    assert "authorization" not in seen[0].headers


def test_model_info_and_token_count() -> None:
    published = ServedContract(scorer=Scorer.QWEN3_YES_NO, limits=Limits(max_docs=9))

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"object": "list", "data": [{"id": "tiny", "max_model_len": 512}]})
        if request.url.path == "/rerank/contract":
            return httpx.Response(200, json=published.to_json())
        assert request.url.path == "/tokenize"
        prompt = json.loads(request.content)["prompt"]
        return httpx.Response(200, json={"count": len(prompt.split()), "max_model_len": 512, "tokens": []})

    info = run(make_client(handler), lambda c: c.model_info())
    assert (info.model_id, info.max_model_len, info.contract.scorer) == ("tiny", 512, Scorer.QWEN3_YES_NO)
    assert info.contract.limits.max_docs == 9 and info.contract.published
    assert run(make_client(handler), lambda c: c.count_tokens("tiny", "three little words")) == 3


@pytest.mark.parametrize(
    ("status", "body", "error", "message"),
    [
        (
            400,
            {
                "error": {
                    "message": "This model's maximum context length is 512 tokens.",
                    "type": "BadRequestError",
                    "code": 400,
                }
            },
            PromptTooLong,
            r"refused a text as too long: This model's maximum context length is 512 tokens\.",
        ),
        (
            404,
            {"error": {"message": "The model `x` does not exist.", "type": "NotFoundError", "code": 404}},
            RequestRejected,
            r"\(404\): The model `x` does not exist\.",
        ),
        (
            422,
            {"detail": [{"loc": ["body", "query"], "msg": "Field required", "type": "missing"}]},
            RequestRejected,
            r"\(422\): Field required",
        ),
        (401, {"error": "Unauthorized"}, RequestRejected, r"refused the API key \(401\)"),
        (
            500,
            {"error": {"message": "EngineCore died\nTraceback ...", "type": "InternalServerError", "code": 500}},
            ServerFailed,
            r"The server failed \(500\): EngineCore died Traceback \.\.\.$",
        ),
        (503, "<html>Service Unavailable</html>", ServerFailed, r"\(503\): <html>Service Unavailable</html>"),
    ],
)
def test_http_errors_become_one_line_with_the_servers_message(
    status: int, body: Any, error: type[Exception], message: str
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if isinstance(body, str):
            return httpx.Response(status, text=body)
        return httpx.Response(status, json=body)

    with pytest.raises(error, match=message) as caught:
        run(make_client(handler), lambda c: c.rerank("m", "q", ["a"]))
    assert "\n" not in str(caught.value)


def test_connection_refused_is_server_unavailable_without_the_address(caplog: pytest.LogCaptureFixture) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    caplog.set_level(logging.WARNING, logger="webui.client")
    with pytest.raises(ServerUnavailable) as caught:
        run(make_client(handler), lambda c: c.model_info())
    # The analyst reads the message; the operator's log has the address.
    assert str(caught.value) == "The rerank server is not reachable: it is starting up or down."
    assert [record.getMessage() for record in caplog.records if "http://rerank.test" in record.getMessage()]


def test_a_slow_server_is_a_timeout() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    with pytest.raises(ServerTimeout, match="did not answer within 3 s"):
        run(make_client(handler), lambda c: c.rerank("m", "q", ["a"]))


def test_a_server_that_accepts_but_never_answers_times_out() -> None:
    # A listening socket nobody accepts from: the kernel completes the handshake, no reply comes.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        client = RerankClient(f"http://127.0.0.1:{port}", timeout=0.3, max_connections=1)
        with pytest.raises(ServerTimeout, match=r"did not answer within 0\.3 s"):
            run(client, lambda c: c.model_info())


def test_nothing_listening_is_server_unavailable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = RerankClient(f"http://127.0.0.1:{port}", timeout=2, max_connections=1)
    with pytest.raises(ServerUnavailable, match="starting up or down"):
        run(client, lambda c: c.rerank("m", "q", ["a"]))


@pytest.mark.parametrize(
    "body",
    [
        {"results": [{"index": 0, "relevance_score": 0.5}]},  # a document left out
        {"results": [{"index": 5, "relevance_score": 0.5}, {"index": 1, "relevance_score": 0.5}]},
        {"oops": True},
    ],
)
def test_unreadable_answers_are_server_failures(body: dict[str, Any]) -> None:
    with pytest.raises(ServerFailed):
        run(make_client(lambda request: httpx.Response(200, json=body)), lambda c: c.rerank("m", "q", ["a", "b"]))


def test_non_json_answer_is_a_server_failure() -> None:
    with pytest.raises(ServerFailed, match="was not JSON"):
        run(make_client(lambda request: httpx.Response(200, text="<html>")), lambda c: c.model_info())


def test_pool_is_capped_at_the_concurrency_limit() -> None:
    client = RerankClient("http://x", timeout=1, max_connections=3)
    assert client.limits.max_connections == 3 and client.limits.max_keepalive_connections == 3


def test_priority_is_sent_only_when_given() -> None:
    seen: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(200, json={"results": [{"index": 0, "relevance_score": 0.5}]})

    run(make_client(handler), lambda c: c.rerank("m", "q", ["a"], priority=3))
    run(make_client(handler), lambda c: c.rerank("m", "q", ["a"]))
    assert seen[0]["priority"] == 3 and "priority" not in seen[1]


def test_a_recent_model_answer_is_reused_only_when_asked() -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": "tiny", "max_model_len": 512}]})
        return httpx.Response(404, json={"detail": "Not Found"})  # a vLLM that publishes no contract

    async def three_asks(client: RerankClient) -> list[ModelInfo]:
        return [await client.model_info(), await client.model_info(max_age=60), await client.model_info()]

    assert run(make_client(handler), three_asks) == [ModelInfo("tiny", 512, ServedContract())] * 3
    # The second ask was answered from the first.
    assert calls == ["/v1/models", "/rerank/contract", "/v1/models", "/rerank/contract"]
