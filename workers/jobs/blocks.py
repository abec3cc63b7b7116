"""executeBlock's runs: the API enqueues them and awaits the result, so no block
code ever runs on the event loop that serves API requests."""

from __future__ import annotations

import uuid
from typing import Any

from app.services.blocks import run_block


async def execute_block(
    ctx: dict[str, Any], user_id: str, block_id: str, input_data: Any, run_id: str
) -> dict[str, Any]:
    engine = ctx["engine"]
    return await run_block(
        ctx["settings"], engine.after_charge, uuid.UUID(user_id), block_id, input_data, run_id
    )
