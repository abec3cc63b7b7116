"""Auto top-up, off the node's path."""

from __future__ import annotations

import logging
import uuid
from typing import Any

log = logging.getLogger(__name__)


async def auto_top_up(ctx: dict[str, Any], user_id: str) -> str:
    from app.services import credits

    result = await credits.run_auto_top_up(ctx["settings"], uuid.UUID(user_id))
    log.info("auto top-up for %s: %s", user_id, result)
    return result
