"""Auto top-up, off the node's path: charge the saved card, credit it once."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from app.errors import AppError
from app.models import CreditTransaction, NotificationType
from app.services import credits
from app.services.notifications import NewNotification, Notifier

log = logging.getLogger(__name__)


async def auto_top_up(ctx: dict[str, Any], user_id: str, cause: str | None = None) -> str:
    """`cause` is the key of the charge that crossed the threshold (None for jobs
    enqueued before it was passed): the Stripe idempotency key is made from it."""
    try:
        result = await credits.run_auto_top_up(ctx["settings"], uuid.UUID(user_id), cause)
    except AppError as error:
        # A declined card is the user's to fix; retrying would only decline again.
        log.warning("auto top-up for %s failed: %s", user_id, error.message)
        await _notify_failed(ctx["notifier"], uuid.UUID(user_id), error.message)
        return f"failed: {error.message}"
    log.info("auto top-up for %s: %s", user_id, result)
    return result


async def _notify_failed(notifier: Notifier, user_id: uuid.UUID, reason: str) -> None:
    # One notification per attempt: attempts are keyed (here and at Stripe) by
    # the user's latest ledger row, so a retried job finds the same key.
    latest = (
        await CreditTransaction.filter(user_id=user_id, is_active=True)
        .order_by("-created_at", "-id")
        .first()
        .values_list("id", flat=True)
    )
    await notifier.notify(
        user_id,
        NewNotification(
            type=NotificationType.AUTO_TOP_UP_FAILED,
            key=f"auto-top-up-failed:{user_id}:{latest}",
            title="Your automatic top-up failed",
            body=f"We could not top up your credits automatically: {reason}. "
            "Check your payment method, or top up by hand.",
            data={"error": reason},
        ),
    )
