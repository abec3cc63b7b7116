"""The scheduler: a loop in every worker that fires due schedules (SEMANTICS.md §9).

A long-lived task started with the worker rather than an arq cron job every
second: a cron job waits for a free job slot, so a worker busy with `max_jobs`
long executions would fire late, and every second would leave a job and a
result key in Redis. The database claim in `app.services.schedules` is what
makes a due time fire once across workers, so nothing is gained from arq's
`unique` either. Polling once a second keeps firings within two seconds of
their due time, and an idle poll is one indexed query.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from datetime import datetime
from typing import Any

from app.clock import utcnow
from app.services import schedules
from app.services.schedules import Firing, FiringOutcome
from workers.engine.context import EngineContext

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0
# Due schedules fired at the same time by one worker (each holds its own row lock).
FIRING_CONCURRENCY = 4


def start_scheduler(engine: EngineContext) -> asyncio.Task:
    return asyncio.create_task(run_scheduler(engine), name="scheduler")


async def stop_scheduler(task: asyncio.Task | None) -> None:
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def run_scheduler(engine: EngineContext) -> None:
    log.info("scheduler started")
    while True:
        try:
            await fire_due_schedules(engine)
        except asyncio.CancelledError:
            raise
        except Exception:
            # The database or Redis is away: try again at the next poll.
            log.exception("scheduler poll failed")
        await asyncio.sleep(POLL_SECONDS)


async def fire_due_schedules(engine: EngineContext, now: datetime | None = None) -> list[Firing]:
    """Fires everything due at `now` (by default: now); returns what happened."""
    now = now or utcnow()
    attempted: set[uuid.UUID] = set()
    firings: list[Firing] = []

    async def fire_until_none_due() -> None:
        while True:
            try:
                firing = await schedules.fire_next_due(
                    engine.settings, engine.redis, engine.publisher, now, attempted
                )
            except Exception:
                # Rolled back: this schedule stays due and is tried at the next poll.
                log.exception("firing a due schedule failed")
                return
            if firing is None:
                return
            firings.append(firing)
            await _report(engine, firing)

    await asyncio.gather(*(fire_until_none_due() for _ in range(FIRING_CONCURRENCY)))
    return firings


async def _report(engine: EngineContext, firing: Firing) -> None:
    await engine.count("schedule_firings", firing.outcome)
    details: dict[str, Any] = {
        "schedule": firing.schedule_id,
        "user": firing.user_id,
        "due": firing.due_at.isoformat(),
    }
    if firing.outcome is FiringOutcome.FIRED:
        log.info("schedule %(schedule)s fired for %(due)s", details)
    elif firing.outcome is FiringOutcome.SKIPPED_NO_BALANCE:
        log.warning(
            "schedule %(schedule)s skipped at %(due)s: owner %(user)s has no credits", details
        )
    elif firing.outcome is FiringOutcome.GRAPH_GONE:
        log.warning("schedule %(schedule)s deleted: its graph version no longer exists", details)
    elif firing.outcome is FiringOutcome.SKIPPED_INVALID:
        log.warning(
            "schedule %s skipped at %s: %s", firing.schedule_id, details["due"], firing.detail
        )
