"""Credits beyond the ledger core: top-ups and their payment provider."""

from __future__ import annotations

import uuid

from app.models import AutoTopUpConfig
from app.services import ledger
from app.settings import Settings


async def run_auto_top_up(settings: Settings, user_id: uuid.UUID) -> str:
    """Charge the saved card for the configured amount when the balance is below
    the threshold. Needs a payment provider; without one nothing is charged."""
    config = await AutoTopUpConfig.get_or_none(user_id=user_id)
    if config is None or config.amount <= 0:
        return "off"
    balance = await ledger.get_balance(user_id)
    if balance >= config.threshold:
        return "not needed"
    if not settings.STRIPE_SECRET_KEY:
        return "payments not configured"
    raise NotImplementedError("Stripe top-ups arrive with the credits issue")
