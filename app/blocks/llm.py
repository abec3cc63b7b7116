"""Calling a language model through any OpenAI-compatible chat completions endpoint.

The endpoint is the operator's (`LLM_API_BASE`), so it is reached without HttpRequest's
private-address guard: a local model server is a normal setup. The key is the user's
stored credentials when the run maps `llm_credentials`, else the operator's
`LLM_API_KEY`; without an operator key every run must map its own.
"""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING, Any, Literal

import httpx
from pydantic import Field

from app.blocks.base import (
    Block,
    BlockCategory,
    BlockCost,
    BlockError,
    BlockInput,
    BlockOutput,
    BlockRunContext,
    without_secrets,
)
from app.blocks.credentials import CredentialsField

if TYPE_CHECKING:
    from app.settings import Settings

# Models are a closed list so that every one has a price: a cost filter can only match
# exact values, and an unlisted model would otherwise run for free.
LLMModel = Literal["gpt-4o-mini", "gpt-4o", "llama3"]
MODEL_COSTS: dict[str, int] = {"gpt-4o-mini": 2, "gpt-4o": 10, "llama3": 1}
DEFAULT_MODEL: LLMModel = "gpt-4o-mini"

REQUEST_TIMEOUT = httpx.Timeout(120, connect=10)
# How much of a provider's non-JSON error body goes into the node's error.
ERROR_TEXT_LIMIT = 500


def _provider_message(response: httpx.Response) -> str:
    """The provider's own words for a failed request, in the shapes providers use."""
    try:
        data = response.json()
    except ValueError:
        return response.text[:ERROR_TEXT_LIMIT].strip() or response.reason_phrase
    if isinstance(data, dict):
        error = data.get("error", data)
        if isinstance(error, dict):
            for key in ("message", "detail", "error"):
                if isinstance(error.get(key), str):
                    return error[key]
        elif isinstance(error, str):
            return error
    return json.dumps(data)[:ERROR_TEXT_LIMIT]


def _parse_json_reply(text: str) -> Any:
    stripped = text.strip()
    # Some models wrap JSON in a Markdown code fence even in JSON mode.
    if stripped.startswith("```") and stripped.endswith("```"):
        stripped = stripped[3:-3]
        if stripped.lower().startswith("json"):
            stripped = stripped[4:]
    try:
        return json.loads(stripped)
    except ValueError as exc:
        raise BlockError(f"LLMCall: the model's reply is not valid JSON: {exc}") from exc


def _token_count(usage: Any, key: str) -> int:
    value = usage.get(key) if isinstance(usage, dict) else None
    return value if isinstance(value, int) else 0


class LLMCall(Block):
    id = uuid.UUID("0b5b2108-d7e9-446e-8e5a-9f57ff16ac2d")
    name = "LLMCall"
    description = (
        "Sends `prompt` (with an optional system prompt) to a language model and yields its "
        "reply, parsed as JSON when `json_response` is set, and the tokens it used."
    )
    categories = (BlockCategory.AI,)
    sensitive = True
    costs = (
        *(
            BlockCost(amount=amount, filter={"model": model})
            for model, amount in MODEL_COSTS.items()
        ),
        # Costs are matched against the input as given, before defaults are filled in, so
        # a node that leaves `model` unset must still pay for the default model.
        BlockCost(amount=MODEL_COSTS[DEFAULT_MODEL], filter={"model": None}),
    )

    class Input(BlockInput):
        prompt: str = Field(description="The user message to send to the model.")
        system_prompt: str = Field(
            default="", description="Instructions sent before the prompt; empty for none."
        )
        model: LLMModel = Field(default=DEFAULT_MODEL, description="The model to use.")
        temperature: float = Field(
            default=0.7, ge=0, le=2, description="Sampling temperature, 0 (focused) to 2."
        )
        max_tokens: int = Field(
            default=1024, ge=1, le=32000, description="The most tokens the reply may use."
        )
        json_response: bool = Field(
            default=False, description="Ask for a JSON object and yield it parsed."
        )

    class Output(BlockOutput):
        response: Any = Field(description="The model's reply: text, or JSON when asked for.")
        prompt_tokens: int = Field(description="Tokens in the prompt, as the provider counts.")
        completion_tokens: int = Field(description="Tokens in the reply.")

    credentials_fields = {
        "llm_credentials": CredentialsField(
            provider="openai",
            types=("API_KEY",),
            description="An API key for the model endpoint (sent as a bearer token).",
            # Without the operator's key every run must bring the user's own.
            server_default_setting="LLM_API_KEY",
        )
    }

    def is_disabled(self, settings: Settings) -> bool:
        return not settings.LLM_API_BASE

    async def run(self, input: Input, context: BlockRunContext):
        async for pin, value in without_secrets(self._call(input, context), context.secrets()):
            yield pin, value

    async def _call(self, input: Input, context: BlockRunContext):
        settings = context.settings
        if not settings.LLM_API_BASE:
            raise BlockError("LLMCall is disabled: the server has no LLM_API_BASE")
        messages = []
        if input.system_prompt:
            messages.append({"role": "system", "content": input.system_prompt})
        messages.append({"role": "user", "content": input.prompt})
        payload: dict[str, Any] = {
            "model": input.model,
            "messages": messages,
            "temperature": input.temperature,
            "max_tokens": input.max_tokens,
        }
        if input.json_response:
            payload["response_format"] = {"type": "json_object"}
        headers = {"Content-Type": "application/json"}
        own_key = context.credentials.get("llm_credentials")
        if own_key is not None:  # the user's stored key wins over the operator's
            headers["Authorization"] = own_key.authorization_header()
        elif settings.LLM_API_KEY:
            headers["Authorization"] = f"Bearer {settings.LLM_API_KEY}"
        url = settings.LLM_API_BASE.rstrip("/") + "/chat/completions"

        try:
            async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT) as client:
                response = await client.post(url, json=payload, headers=headers)
        except httpx.TimeoutException as exc:
            raise BlockError("LLMCall: the model endpoint timed out") from exc
        except httpx.HTTPError as exc:
            raise BlockError(
                f"LLMCall: cannot reach the model endpoint: {str(exc) or type(exc).__name__}"
            ) from exc
        if response.is_error:
            raise BlockError(
                f"LLMCall: the model endpoint answered {response.status_code}: "
                f"{_provider_message(response)}"
            )

        try:
            data = response.json()
            text = data["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise BlockError("LLMCall: the model endpoint sent an unexpected response") from exc
        if not isinstance(text, str):
            # e.g. a refusal or a tool call instead of a message
            raise BlockError("LLMCall: the model sent no text reply")
        usage = data.get("usage")
        yield "response", _parse_json_reply(text) if input.json_response else text
        yield "prompt_tokens", _token_count(usage, "prompt_tokens")
        yield "completion_tokens", _token_count(usage, "completion_tokens")
