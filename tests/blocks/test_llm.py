"""LLMCall against a local stand-in for an OpenAI-compatible chat completions API."""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from app.blocks.base import BlockError, BlockRunContext, InvalidBlockInput
from app.blocks.costs import cost_before_run
from app.blocks.credentials import CredentialsSecret
from app.blocks.llm import LLMCall
from app.settings import Settings
from tests.blocks.conftest import run_block
from tests.llm_stand_in import StandIn, start_stand_in


@pytest.fixture(scope="module")
async def provider() -> AsyncIterator[StandIn]:
    stand_in, runner = await start_stand_in()
    yield stand_in
    await runner.cleanup()


@pytest.fixture
def stand_in(provider: StandIn) -> StandIn:
    """The module's provider, reset to answering normally."""
    provider.reset()
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


# --- stored credentials (issue 16) -------------------------------------------------


def _own_key(stand_in: StandIn, key: str) -> BlockRunContext:
    return BlockRunContext(
        settings=stand_in.settings,
        user_id=uuid.uuid4(),
        credentials={"llm_credentials": CredentialsSecret("openai", "API_KEY", key)},
    )


async def test_the_users_own_key_wins_over_the_operators(stand_in: StandIn) -> None:
    key = "sk-user-" + uuid.uuid4().hex
    outputs = dict(await run_block(LLMCall(), {"prompt": "hi"}, _own_key(stand_in, key)))
    assert outputs["response"] == "Hello from the model."
    [request] = stand_in.requests
    assert request["headers"]["Authorization"] == f"Bearer {key}"


async def test_a_provider_echoing_the_key_never_gets_it_into_outputs_or_errors(
    stand_in: StandIn,
) -> None:
    key = "sk-user-" + uuid.uuid4().hex
    stand_in.echo_authorization = True
    outputs = dict(await run_block(LLMCall(), {"prompt": "hi"}, _own_key(stand_in, key)))
    assert outputs["response"] == "Hello from the model. (you sent Bearer ***)"
    stand_in.status = 401
    with pytest.raises(BlockError) as failure:
        await run_block(LLMCall(), {"prompt": "hi"}, _own_key(stand_in, key))
    assert key not in str(failure.value)
    assert "Incorrect API key provided: Bearer ***" in str(failure.value)


def test_llm_credentials_are_required_only_without_an_operator_key() -> None:
    field = LLMCall.credentials_fields["llm_credentials"]
    assert field.is_required(Settings(LLM_API_BASE="http://x/v1", LLM_API_KEY=None))
    assert not field.is_required(Settings(LLM_API_BASE="http://x/v1", LLM_API_KEY="sk-op"))
    assert field.json_schema("llm_credentials")["credentials_provider"] == "openai"
