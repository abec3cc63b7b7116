"""Graph inputs and outputs: how a run's inputs enter and its results leave."""

from __future__ import annotations

import uuid
from typing import Any, Literal

from pydantic import Field

from app.blocks.base import Block, BlockCategory, BlockInput, BlockOutput, BlockRunContext

# The value types an AgentInput may declare (what clients render as a form field).
InputType = Literal["string", "number", "integer", "boolean", "object", "array", "file", "any"]


class AgentInput(Block):
    id = uuid.UUID("c0a8e994-ebf1-4a9c-a4d8-89d09c86741b")
    name = "AgentInput"
    description = "A named input of the graph; its value is the run's input of that name."
    categories = (BlockCategory.INPUT,)

    class Input(BlockInput):
        name: str = Field(description="The input's name in the run's inputs.")
        value: Any = Field(default=None, description="The default when the run gives none.")
        description: str = Field(default="", description="Shown to people filling it in.")
        type: InputType = Field(default="any", description="The value type clients ask for.")

    class Output(BlockOutput):
        result: Any = Field(description="The input's value.")

    async def run(self, input: Input, context: BlockRunContext):
        yield "result", input.value


class AgentOutput(Block):
    id = uuid.UUID("363ae599-353e-4804-937e-b2ee3cef3da4")
    name = "AgentOutput"
    description = "A named output of the graph; every value it receives becomes a run output."
    categories = (BlockCategory.OUTPUT,)

    class Input(BlockInput):
        name: str = Field(description="The output's name in the run's outputs.")
        value: Any = Field(default=None, description="The value to record.")
        description: str = Field(default="", description="What this output means.")

    class Output(BlockOutput):
        output: Any = Field(description="The recorded value, passed on.")

    async def run(self, input: Input, context: BlockRunContext):
        yield "output", input.value
