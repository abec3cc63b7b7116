"""Blocks that start a graph from outside."""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import Field

from app.blocks.base import Block, BlockCategory, BlockInput, BlockOutput, BlockRunContext

WEBHOOK_TRIGGER_BLOCK_NAME = "WebhookTrigger"
# The pin a webhook delivery's JSON body is set on.
WEBHOOK_PAYLOAD_PIN = "payload"


class WebhookTrigger(Block):
    id = uuid.UUID("5f0c3b7e-2a1d-4c8e-9b6f-7d2e1a4c9f30")
    name = WEBHOOK_TRIGGER_BLOCK_NAME
    description = (
        "Starts the graph when a signed POST arrives at its trigger URL (Graph.trigger) and "
        "yields the request's JSON body on `payload`. A graph has at most one."
    )
    categories = (BlockCategory.INPUT,)

    class Input(BlockInput):
        payload: Any = Field(
            default=None,
            description="The delivery's JSON body, set by the server; a default is for tests.",
        )
        description: str = Field(default="", description="What the sender posts here.")

    class Output(BlockOutput):
        payload: Any = Field(description="The delivery's JSON body.")

    async def run(self, input: Input, context: BlockRunContext):
        yield WEBHOOK_PAYLOAD_PIN, input.payload
