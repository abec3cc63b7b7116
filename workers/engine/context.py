"""What a running graph needs from its worker: settings, events, counters, hooks."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field

from arq import ArqRedis

from app.clients.redis import metrics_counter_key
from app.events import EventPublisher
from app.models import Execution
from app.services.auto_top_up import AutoTopUp
from app.services.notifications import Notifier, notify_run_ended
from app.settings import Settings
from workers.engine.ownership import RunnerLocks
from workers.engine.store import RunStore


@dataclass
class EngineContext:
    settings: Settings
    redis: ArqRedis
    publisher: EventPublisher
    auto_top_up: AutoTopUp
    store: RunStore = field(default_factory=RunStore)
    locks: RunnerLocks = field(default_factory=RunnerLocks)
    # Tells owners when their scheduled or long runs end (None: nobody is told).
    notifier: Notifier | None = None
    # Independent ready nodes of one execution that run at the same time.
    node_concurrency: int = 16

    async def count(self, name: str, status: object, by: int = 1) -> None:
        """Bump a shared counter that every API process reports on /metrics."""
        await self.redis.hincrby(metrics_counter_key(self.settings), f"{name}|{status}", by)

    def count_in(self, pipeline, counts: Mapping[str, int]) -> None:
        """Queue counter bumps ("name|status" -> n) on a Redis pipeline."""
        key = metrics_counter_key(self.settings)
        for field_name, by in counts.items():
            pipeline.hincrby(key, field_name, by)

    async def after_charge(
        self, user_id: uuid.UUID, balance: int | None, cost: int, cause: str
    ) -> None:
        """`cause` is the key of the charge: a retried auto top-up for it keeps one
        Stripe idempotency key."""
        if balance is not None:
            await self.auto_top_up.balance_dropped(user_id, balance + cost, balance, cause)

    async def run_ended(self, execution: Execution) -> None:
        """Called once per run (sub-graph runs included) after its end is written
        and announced: the place for whatever follows a run's end."""
        await self.count("executions", execution.status)
        await notify_run_ended(self.notifier, execution)
