"""LLMCall against a local stand-in for an OpenAI-compatible chat completions API."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from app.blocks.base import BlockError, InvalidBlockInput
from app.blocks.costs import cost_before_run
from app.blocks.llm import LLMCall
from app.settings import Settings
from tests.blocks.conftest import run_block


@dataclass
class StandIn:
    """The fake provider: what it got, and what it answers next."""

    port: int
    requests: list[dict[str, Any]] = field(default_factory=list)
    reply_text: str = "Hello from the model."
    status: int = 200
    error_body: Any = None

    @property
    def settings(self) -> Settings:
        return Settings(LLM_API_BASE=f"http://127.0.0.1:{self.port}/v1", LLM_API_KEY="sk-test")


def _app(stand_in: StandIn) -> web.Application:
    async def chat_completions(request: web.Request) -> web.Response:
        stand_in.requests.append({"headers": dict(request.headers), "json": await request.json()})
        if stand_in.status != 200:
            if isinstance(stand_in.error_body, str):
                return web.Response(text=stand_in.error_body, status=stand_in.status)
            return web.json_response(stand_in.error_body, status=stand_in.status)
        body = await request.json()
        return web.json_response(
            {
                "id": "chatcmpl-test",
                "object": "chat.completion",
                "created": 1700000000,
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": stand_in.reply_text},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19},
            }
        )

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat_completions)
    return app


@pytest.fixture(scope="module")
async def provider() -> AsyncIterator[StandIn]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    stand_in = StandIn(port=port)
    runner = web.AppRunner(_app(stand_in), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield stand_in
    await runner.cleanup()


@pytest.fixture
def stand_in(provider: StandIn) -> StandIn:
    """The module's provider, reset to answering normally."""
    provider.requests.clear()
    provider.reply_text = "Hello from the model."
    provider.status = 200
    provider.error_body = None
    return provider


async def test_sends_the_chat_request_and_yields_the_reply(stand_in: StandIn) -> None:
    outputs = await run_block(
        LLMCall(),
        {
            "prompt": "Say hello",
            "system_prompt": "You are terse.",
            "model": "gpt-4o",
            "temperature": 0.2,
            "max_tokens": 50,
        },
        settings=stand_in.settings,
    )
    assert outputs == [
        ("response", "Hello from the model."),
        ("prompt_tokens", 12),
        ("completion_tokens", 7),
    ]
    [request] = stand_in.requests
    assert request["headers"]["Authorization"] == "Bearer sk-test"
    assert request["json"] == {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Say hello"},
        ],
        "temperature": 0.2,
        "max_tokens": 50,
    }


async def test_defaults_and_no_key(stand_in: StandIn) -> None:
    settings = Settings(LLM_API_BASE=f"http://127.0.0.1:{stand_in.port}/v1/", LLM_API_KEY=None)
    outputs = dict(await run_block(LLMCall(), {"prompt": "hi"}, settings=settings))
    assert outputs["response"] == "Hello from the model."
    [request] = stand_in.requests
    assert "Authorization" not in request["headers"]
    assert request["json"] == {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0.7,
        "max_tokens": 1024,
    }


async def test_json_response_is_asked_for_and_parsed(stand_in: StandIn) -> None:
    stand_in.reply_text = json.dumps({"answer": 42, "items": ["a", "b"]})
    outputs = dict(
        await run_block(
            LLMCall(), {"prompt": "JSON please", "json_response": True}, settings=stand_in.settings
        )
    )
    assert outputs["response"] == {"answer": 42, "items": ["a", "b"]}
    assert stand_in.requests[0]["json"]["response_format"] == {"type": "json_object"}


async def test_json_in_a_code_fence_is_parsed(stand_in: StandIn) -> None:
    stand_in.reply_text = '```json\n{"ok": true}\n```'
    outputs = dict(
        await run_block(
            LLMCall(), {"prompt": "JSON please", "json_response": True}, settings=stand_in.settings
        )
    )
    assert outputs["response"] == {"ok": True}


async def test_unparsable_json_reply_is_a_block_error(stand_in: StandIn) -> None:
    stand_in.reply_text = "Sure! Here is your JSON: {oops"
    with pytest.raises(BlockError, match="not valid JSON"):
        await run_block(
            LLMCall(), {"prompt": "JSON please", "json_response": True}, settings=stand_in.settings
        )


async def test_text_reply_is_not_parsed_without_json_response(stand_in: StandIn) -> None:
    stand_in.reply_text = '{"looks": "like json"}'
    outputs = dict(await run_block(LLMCall(), {"prompt": "x"}, settings=stand_in.settings))
    assert outputs["response"] == '{"looks": "like json"}'


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (
            401,
            {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}},
            "401: Incorrect API key provided",
        ),
        (500, {"error": {"message": "The server had an error"}}, "500: The server had an error"),
        (503, "upstream unavailable", "503: upstream unavailable"),
        (429, {"error": "rate limited"}, "429: rate limited"),
    ],
)
async def test_provider_errors_are_block_errors(
    stand_in: StandIn, status: int, body: Any, message: str
) -> None:
    stand_in.status = status
    stand_in.error_body = body
    with pytest.raises(BlockError, match=message):
        await run_block(LLMCall(), {"prompt": "hi"}, settings=stand_in.settings)


async def test_unreachable_endpoint_is_a_block_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = Settings(LLM_API_BASE=f"http://127.0.0.1:{port}/v1")
    with pytest.raises(BlockError, match="cannot reach"):
        await run_block(LLMCall(), {"prompt": "hi"}, settings=settings)


async def test_without_a_base_the_run_fails_cleanly() -> None:
    with pytest.raises(BlockError, match="LLM_API_BASE"):
        await run_block(LLMCall(), {"prompt": "hi"}, settings=Settings(LLM_API_BASE=None))


def test_is_disabled_without_an_api_base() -> None:
    assert LLMCall().is_disabled(Settings(LLM_API_BASE=None))
    assert not LLMCall().is_disabled(Settings(LLM_API_BASE="http://127.0.0.1:1/v1"))


@pytest.mark.parametrize(
    "bad",
    [
        {"model": "some-unpriced-model"},
        {"temperature": 2.5},
        {"temperature": -0.1},
        {"max_tokens": 0},
        {"max_tokens": 32001},
        {},
    ],
)
def test_input_validation(bad: dict[str, Any]) -> None:
    data = {"prompt": "hi", **bad} if bad else {}
    with pytest.raises(InvalidBlockInput):
        LLMCall().validate_input(data)


def test_cost_depends_on_the_model() -> None:
    costs = LLMCall().costs
    prices = {
        model: cost_before_run(costs, {"prompt": "hi", "model": model})
        for model in ("gpt-4o-mini", "gpt-4o", "llama3")
    }
    assert prices == {"gpt-4o-mini": 2, "gpt-4o": 10, "llama3": 1}
    # The engine prices the input as given: no model means the default model's price.
    assert cost_before_run(costs, {"prompt": "hi"}) == prices["gpt-4o-mini"]
    # Every model the block accepts has a price.
    accepted = LLMCall().input_schema()["properties"]["model"]["enum"]
    assert all(cost_before_run(costs, {"model": model}) > 0 for model in accepted)
