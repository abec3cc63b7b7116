"""The block catalogue and running a single block."""

from __future__ import annotations

import strawberry
from strawberry.scalars import JSON

from app.context import Info
from app.services import blocks
from schema.permissions import CanExecuteBlock, CanReadBlock
from schema.types.blocks import Block, BlockOutput


@strawberry.type
class BlockQueries:
    @strawberry.field(
        permission_classes=[CanReadBlock],
        description="All enabled blocks with their schemas and costs.",
    )
    async def blocks(self, info: Info, category: str | None = None) -> list[Block]:
        await info.context.principal()
        descriptors = await info.context.services.blocks.descriptors()
        return [
            Block.from_descriptor(d)
            for d in descriptors
            if not d["disabled"] and (category is None or category.upper() in d["categories"])
        ]

    @strawberry.field(permission_classes=[CanReadBlock])
    async def block(self, info: Info, id: strawberry.ID) -> Block | None:
        descriptor = await info.context.services.blocks.get(str(id))
        return Block.from_descriptor(descriptor) if descriptor else None


@strawberry.type
class BlockMutations:
    @strawberry.mutation(
        permission_classes=[CanExecuteBlock],
        description="Runs one block directly, outside any graph; charged like a node.",
    )
    async def execute_block(self, info: Info, block_id: strawberry.ID, input: JSON) -> BlockOutput:
        result = await blocks.execute_block(
            info.context.settings,
            info.context.services.redis,
            await info.context.user_id(),
            str(block_id),
            input,
        )
        return BlockOutput(outputs=result.outputs, cost=result.cost)
