"""Human review: reviews nobody answered within REVIEW_TIMEOUT_HOURS expire as rejected."""

from __future__ import annotations

import logging
from typing import Any

from app.clock import utcnow
from app.services.reviews import ReviewServices, expire_reviews

log = logging.getLogger(__name__)

EXPIRE_REVIEWS_JOB = "expire_reviews"


async def expire_due_reviews(ctx: dict[str, Any]) -> int:
    """Safe to repeat: a review is expired once (its row is locked and checked)."""
    engine = ctx["engine"]
    services = ReviewServices(engine.settings, engine.redis, engine.publisher)
    expired = await expire_reviews(services, utcnow())
    if expired:
        log.info("expired %d review(s) nobody answered", expired)
    return expired
