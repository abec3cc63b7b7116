"""Human review: a node that waits for a person's decision on its data."""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import Field

from app.blocks.base import (
    Block,
    BlockCategory,
    BlockError,
    BlockInput,
    BlockOutput,
    BlockRunContext,
)

DEFAULT_REJECTION = "Rejected"


class HumanReview(Block):
    id = uuid.UUID("7d3c5a2e-4f6b-4e0a-9c1d-2b8e6f5a9d41")
    name = "HumanReview"
    description = (
        "Pauses the run and shows a person `data` with `message`. Approved, the data (or "
        "the person's edited data) comes out on `approved`; rejected (or unanswered within "
        "REVIEW_TIMEOUT_HOURS), the reason comes out on `rejected`. Waiting costs nothing "
        "and holds no worker."
    )
    categories = (BlockCategory.BASIC,)

    class Input(BlockInput):
        data: Any = Field(default=None, description="What the person reviews.")
        message: str = Field(default="", description="What to tell the person.", max_length=2000)

    class Output(BlockOutput):
        approved: Any = Field(description="The approved data (as edited by the person).")
        rejected: str = Field(description="Why the data was rejected.")

    async def run(self, input: Input, context: BlockRunContext):
        decision = context.review
        if decision is None:
            # Only the engine can pause a run and wait for a person.
            raise BlockError("HumanReview runs only inside a graph execution")
        if decision.approved:
            yield "approved", input.data if decision.data is None else decision.data
        else:
            yield "rejected", decision.message or DEFAULT_REJECTION
