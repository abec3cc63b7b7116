"""Block tests run blocks directly, as the engine and executeBlock do."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from app.blocks.base import Block, BlockRunContext
from app.settings import Settings, get_settings


@pytest.fixture
def block_context() -> BlockRunContext:
    return BlockRunContext(settings=get_settings(), user_id=uuid.uuid4())


async def run_block(
    block: Block,
    input_data: dict[str, Any],
    context: BlockRunContext | None = None,
    settings: Settings | None = None,
) -> list[tuple[str, Any]]:
    """Validate the input like the engine does, run the block, collect (pin, value)s."""
    context = context or BlockRunContext(settings=settings or get_settings(), user_id=uuid.uuid4())
    typed = block.validate_input(input_data)
    return [item async for item in block.run(typed, context)]
