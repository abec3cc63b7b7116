"""Blocks that hold or pass on a value."""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import Field

from app.blocks.base import Block, BlockCategory, BlockInput, BlockOutput, BlockRunContext


class StoreValue(Block):
    id = uuid.UUID("1ff065e9-88e8-4358-9d82-8dc91f622ba9")
    name = "StoreValue"
    description = (
        "Passes on `data` when it is given, otherwise `input`; its output is static, "
        "so every later run of a linked node reuses it."
    )
    categories = (BlockCategory.BASIC,)
    static_output = True

    class Input(BlockInput):
        input: Any = Field(default=None, description="The value to pass on.")
        data: Any = Field(default=None, description="A fixed value; wins when given.")

    class Output(BlockOutput):
        output: Any = Field(description="The stored value.")

    async def run(self, input: Input, context: BlockRunContext):
        yield "output", input.data if input.data is not None else input.input
