"""What every worker checks once a minute (and at start): runs whose job never
reached the queue, and credit holds that no run will ever release."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta

from app.clock import utcnow
from app.services import ledger
from app.services.executions import requeue_stranded_runs
from app.services.reviews import requeue_decided_runs
from app.services.run_slots import RunSlots
from workers.engine.context import EngineContext

log = logging.getLogger(__name__)

SWEEP_SECONDS = 60.0
# Longer than any node may run (Wait's hour, plus resumes): a hold this old is stale.
STALE_RESERVATION_AGE = timedelta(hours=3)


def start_sweeps(engine: EngineContext) -> asyncio.Task:
    return asyncio.create_task(run_sweeps(engine), name="sweeps")


async def stop_sweeps(task: asyncio.Task | None) -> None:
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def sweep_once(engine: EngineContext) -> None:
    now = utcnow()
    requeued = await requeue_stranded_runs(engine.settings, engine.redis, now)
    if requeued:
        log.warning("re-enqueued %d run(s) that never reached the queue", requeued)
    # Safety net for a promotion lost to an error (app/services/run_slots.py).
    await RunSlots(engine.settings, engine.redis).nudge()
    resumed = await requeue_decided_runs(engine.settings, engine.redis, now)
    if resumed:
        log.warning("re-enqueued %d decided run(s) whose resume job was lost", resumed)
    released = await ledger.release_stale_reservations(now - STALE_RESERVATION_AGE)
    if released:
        log.warning("released %d credit(s) held by runs that never came back", released)


async def run_sweeps(engine: EngineContext) -> None:
    while True:
        try:
            await sweep_once(engine)
        except asyncio.CancelledError:
            raise
        except Exception:
            # The database or Redis is away: try again at the next sweep.
            log.exception("sweep failed")
        await asyncio.sleep(SWEEP_SECONDS)
