"""Auto top-up, off the node's path: charge the saved card, credit it once."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from app.errors import AppError
from app.services import credits

log = logging.getLogger(__name__)


async def auto_top_up(ctx: dict[str, Any], user_id: str, cause: str | None = None) -> str:
    """`cause` is the key of the charge that crossed the threshold (None for jobs
    enqueued before it was passed): the Stripe idempotency key is made from it."""
    try:
        result = await credits.run_auto_top_up(ctx["settings"], uuid.UUID(user_id), cause)
    except AppError as error:
        # A declined card is the user's to fix; retrying would only decline again.
        log.warning("auto top-up for %s failed: %s", user_id, error.message)
        return f"failed: {error.message}"
    log.info("auto top-up for %s: %s", user_id, result)
    return result
