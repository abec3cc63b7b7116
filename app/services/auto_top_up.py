"""Auto top-up: when a charge takes the balance below the user's threshold.

The engine calls `balance_dropped` after every charge. Crossing the threshold
enqueues one `auto_top_up` job per user (deduplicated by its job id while it
waits), so a burst of node runs asks for one top-up, off the node's path. The
job carries the key of the charge that crossed the threshold: however often it
is retried, it asks Stripe with the same idempotency key.
The same drop is where the low-balance notification is decided.
"""

from __future__ import annotations

import logging
import uuid
from typing import Protocol

from arq import ArqRedis

from app.clients.redis import arq_job_id
from app.models import AutoTopUpConfig
from app.services.notifications import Notifier
from app.settings import Settings

log = logging.getLogger(__name__)

AUTO_TOP_UP_JOB = "auto_top_up"


class AutoTopUp(Protocol):
    async def balance_dropped(
        self, user_id: uuid.UUID, before: int, after: int, cause: str
    ) -> None: ...


class QueuedAutoTopUp:
    def __init__(self, arq: ArqRedis, settings: Settings, notifier: Notifier | None = None) -> None:
        self.arq = arq
        self.settings = settings
        self.notifier = notifier

    async def balance_dropped(
        self, user_id: uuid.UUID, before: int, after: int, cause: str
    ) -> None:
        if self.notifier is not None:
            await self.notifier.balance_dropped(user_id, before, after)
        config = await AutoTopUpConfig.get_or_none(user_id=user_id)
        if config is None or config.amount <= 0:
            return
        if before >= config.threshold > after:
            await self.arq.enqueue_job(
                AUTO_TOP_UP_JOB,
                str(user_id),
                cause,
                _job_id=arq_job_id(self.settings, "auto-top-up", user_id),
            )
            log.info(
                "auto top-up requested for %s (balance %d < %d)", user_id, after, config.threshold
            )
