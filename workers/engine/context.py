"""What a running graph needs from its worker: settings, events, counters, hooks."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from arq import ArqRedis

from app.clients.redis import metrics_counter_key
from app.events import EventPublisher
from app.services.auto_top_up import AutoTopUp
from app.services.notifications import Notifier
from app.settings import Settings


@dataclass
class EngineContext:
    settings: Settings
    redis: ArqRedis
    publisher: EventPublisher
    auto_top_up: AutoTopUp
    # Tells owners when their scheduled or long runs end (None: nobody is told).
    notifier: Notifier | None = None
    # Independent ready nodes of one execution that run at the same time.
    node_concurrency: int = 16

    async def count(self, name: str, status: object) -> None:
        """Bump a shared counter that every API process reports on /metrics."""
        await self.redis.hincrby(metrics_counter_key(self.settings), f"{name}|{status}", 1)

    async def after_charge(self, user_id: uuid.UUID, balance: int | None, cost: int) -> None:
        if balance is not None:
            await self.auto_top_up.balance_dropped(user_id, balance + cost, balance)
