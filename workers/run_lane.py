"""Graph runs on a queue of their own, worked by an arq Worker inside every worker
process beside the main one, at most WORKER_MAX_RUNS at a time.

A run job may find its run owed to someone else (app/services/run_slots.py) and
end at once; the run queue's order is what hands the next free slot to the run
owed it (promoted jobs go to the front). On the main queue runs shared their
slots with blocks, top-ups and cron jobs, and took them in plain arrival order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from arq import func
from arq.worker import Worker

from app.clients.redis import arq_redis_settings, arq_run_health_check_key, arq_run_queue_name
from workers.engine.context import EngineContext
from workers.jobs.executions import RUN_MAX_TRIES, run_execution
from workers.lease import leased, shorten_in_progress
from workers.wakeup import WakeableWorker

log = logging.getLogger(__name__)

RESTART_SECONDS = 5.0


def run_function():
    # Long runs are fine: liveness comes from the job's lease, not a timeout. The
    # result is kept so a run's end can be awaited; a run owed a slot later gets a
    # new job all the same (RunSlots.enqueue).
    return func(leased(run_execution), timeout=24 * 3600, max_tries=RUN_MAX_TRIES, keep_result=3600)


@dataclass
class RunLane:
    worker: Worker
    task: asyncio.Task


def start_run_lane(engine: EngineContext) -> RunLane:
    settings = engine.settings
    worker = shorten_in_progress(
        WakeableWorker(
            functions=[run_function()],
            queue_name=arq_run_queue_name(settings),
            redis_settings=arq_redis_settings(settings),
            health_check_key=arq_run_health_check_key(settings),
            ctx={"settings": settings, "engine": engine},
            max_jobs=settings.WORKER_MAX_RUNS,
            # The main worker owns the process's signals and stops this one.
            handle_signals=False,
            # Only the fallback: enqueues and promotions wake it (workers/wakeup.py).
            poll_delay=settings.WORKER_POLL_SECONDS,
        )
    )
    return RunLane(worker, asyncio.create_task(_work(worker), name="run-lane"))


async def _work(worker: Worker) -> None:
    while True:
        try:
            await worker.main()
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            # Redis away: the main worker notices too; runs wait in their queue.
            log.exception("the run lane stopped; starting it again")
            await asyncio.sleep(RESTART_SECONDS)


async def stop_run_lane(lane: RunLane | None) -> None:
    if lane is None:
        return
    lane.task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await lane.task
    # Runs still going are cancelled; their jobs run again elsewhere and resume.
    with contextlib.suppress(asyncio.CancelledError):
        await lane.worker.close()
