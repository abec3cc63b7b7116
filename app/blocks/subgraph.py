"""Running another of the user's graphs as one node."""

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


class SubGraph(Block):
    id = uuid.UUID("e189baac-8c20-45a1-94a7-55177ea42565")
    name = "SubGraph"
    description = (
        "Runs another of your graphs with `inputs` and yields each of its outputs on a pin "
        "of the same name. The child run's events and cost roll up to this execution."
    )
    categories = (BlockCategory.AGENT,)
    sensitive = True

    class Input(BlockInput):
        graph_id: str = Field(description="The graph to run.")
        graph_version: int = Field(description="Its version.")
        inputs: dict[str, Any] = Field(default_factory=dict, description="Its run inputs.")

    class Output(BlockOutput):
        """Output pins are the sub-graph's output names (see has_dynamic_output_pins)."""

    def has_dynamic_output_pins(self) -> bool:
        return True

    async def run(self, input: Input, context: BlockRunContext):
        if context.run_sub_graph is None:
            raise BlockError("SubGraph runs only inside a graph execution")
        async for output_name, value in context.run_sub_graph(
            input.graph_id, input.graph_version, input.inputs
        ):
            yield output_name, value
