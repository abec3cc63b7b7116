"""Housekeeping that keeps tables from growing without bound."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from app.clock import utcnow
from app.models import ProcessedStripeEvent, TriggerDelivery

log = logging.getLogger(__name__)

# Stripe retries a webhook for up to three days; ids older than this cannot replay.
STRIPE_EVENT_RETENTION = timedelta(days=30)


async def prune_processed_stripe_events(ctx: dict[str, Any] | None = None) -> int:
    cutoff = utcnow() - STRIPE_EVENT_RETENTION
    deleted = await ProcessedStripeEvent.filter(received_at__lt=cutoff).delete()
    if deleted:
        log.info("pruned %d processed Stripe event ids older than %s", deleted, cutoff)
    return deleted


# Webhook senders retry for a few days at most; older delivery ids cannot replay, and
# a signature is refused once its timestamp is minutes old.
TRIGGER_DELIVERY_RETENTION = timedelta(days=30)


async def prune_trigger_deliveries(ctx: dict[str, Any] | None = None) -> int:
    cutoff = utcnow() - TRIGGER_DELIVERY_RETENTION
    deleted = await TriggerDelivery.filter(received_at__lt=cutoff).delete()
    if deleted:
        log.info("pruned %d trigger deliveries older than %s", deleted, cutoff)
    return deleted
