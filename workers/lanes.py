"""A lane: an arq Worker on a queue of its own, run as a task inside every worker
process beside the main Worker (workers/mail_lane.py, workers/run_lane.py).

The main Worker owns the process's signals and stops its lanes; enqueues wake a
lane at once (workers/wakeup.py), its timed poll is only the fallback. A lane
whose Worker fails (Redis away) starts again; its jobs wait in their queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from arq.worker import Worker

from app.clients.redis import arq_redis_settings
from app.settings import Settings
from workers.lease import shorten_in_progress
from workers.wakeup import WakeableWorker

log = logging.getLogger(__name__)

RESTART_SECONDS = 5.0


@dataclass
class Lane:
    name: str
    worker: Worker
    task: asyncio.Task


@dataclass(frozen=True)
class LaneSpec:
    """What a lane works: its jobs, queue, health key, job context and width."""

    name: str
    functions: list
    queue_name: str
    health_check_key: str
    ctx: dict[str, Any]
    max_jobs: int


def start_lane(settings: Settings, spec: LaneSpec) -> Lane:
    worker = shorten_in_progress(
        WakeableWorker(
            functions=spec.functions,
            queue_name=spec.queue_name,
            redis_settings=arq_redis_settings(settings),
            health_check_key=spec.health_check_key,
            ctx=spec.ctx,
            max_jobs=spec.max_jobs,
            handle_signals=False,
            poll_delay=settings.WORKER_POLL_SECONDS,
        )
    )
    return Lane(spec.name, worker, asyncio.create_task(_work(spec.name, worker), name=spec.name))


async def _work(name: str, worker: Worker) -> None:
    while True:
        try:
            await worker.main()
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("the %s stopped; starting it again", name)
            await asyncio.sleep(RESTART_SECONDS)


async def stop_lane(lane: Lane | None) -> None:
    """Jobs still going are cancelled: their leases lapse and they run again
    elsewhere (a run resumes, a mail is retried)."""
    if lane is None:
        return
    lane.task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await lane.task
    with contextlib.suppress(asyncio.CancelledError):
        await lane.worker.close()
