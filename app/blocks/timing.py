"""Blocks about time: waiting, and reading the clock."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field

from app.blocks.base import (
    Block,
    BlockCategory,
    BlockCost,
    BlockCostType,
    BlockError,
    BlockInput,
    BlockOutput,
    BlockRunContext,
)

MAX_WAIT_SECONDS = 3600
# What a Wait's run time may exceed its `seconds` by (scheduling, a busy worker),
# as estimateExecution assumes it.
WAIT_OVERHEAD_SECONDS = 2.0


class Wait(Block):
    id = uuid.UUID("bfe98523-7b87-4854-bf5a-a7aeefc94510")
    name = "Wait"
    description = "Waits `seconds` (at most an hour), then passes `input` on unchanged."
    categories = (BlockCategory.TIME, BlockCategory.BASIC)
    # Waiting holds a worker slot, so it is charged by the second of run time.
    costs = (BlockCost(amount=1, type=BlockCostType.SECOND),)

    class Input(BlockInput):
        input: Any = Field(default=None, description="The value to pass on after the wait.")
        seconds: float = Field(
            ge=0, le=MAX_WAIT_SECONDS, description="How long to wait, 0 to 3600 seconds."
        )

    class Output(BlockOutput):
        output: Any = Field(description="The input, after the wait.")

    def run_seconds_range(self, input_data: Mapping[str, Any]) -> tuple[float, float | None]:
        # The wait itself, plus what starting and finishing a node may add.
        seconds = input_data.get("seconds")
        if isinstance(seconds, int | float) and not isinstance(seconds, bool):
            if 0 <= seconds <= MAX_WAIT_SECONDS:
                return float(seconds), float(seconds) + WAIT_OVERHEAD_SECONDS
        return 0.0, MAX_WAIT_SECONDS + WAIT_OVERHEAD_SECONDS

    async def run(self, input: Input, context: BlockRunContext):
        # asyncio.sleep rather than a blocking sleep: cancelling the run stops the wait.
        await asyncio.sleep(input.seconds)
        yield "output", input.input


class CurrentTime(Block):
    id = uuid.UUID("bd097415-7d13-4e88-adb8-6651a0426022")
    name = "CurrentTime"
    description = (
        "The current time in `timezone` (an IANA name such as Europe/Paris), formatted with "
        "the strftime `format`, or as ISO 8601 when `format` is empty."
    )
    categories = (BlockCategory.TIME,)

    class Input(BlockInput):
        trigger: Any = Field(
            default=None, description="Any value; linking to it starts the block. Ignored."
        )
        format: str = Field(
            default="", description="A strftime format, e.g. %Y-%m-%d %H:%M; empty for ISO 8601."
        )
        timezone: str = Field(default="UTC", description="An IANA time zone name, e.g. UTC.")

    class Output(BlockOutput):
        time: str = Field(description="The current time, formatted.")

    async def run(self, input: Input, context: BlockRunContext):
        try:
            zone = ZoneInfo(input.timezone)
        # ValueError covers names ZoneInfo refuses outright (empty, absolute paths, "..").
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise BlockError(f"unknown time zone {input.timezone!r}") from exc
        now = datetime.now(zone)
        try:
            text = now.strftime(input.format) if input.format else now.isoformat()
        except ValueError as exc:  # e.g. an embedded NUL character in the format
            raise BlockError(f"invalid time format {input.format!r}: {exc}") from exc
        yield "time", text
