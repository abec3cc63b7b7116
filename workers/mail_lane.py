"""Notification mail on a queue of its own, worked by a small arq Worker inside
every worker process, beside the main one.

A mail job waits on an SMTP relay, which may be slow or silent: up to
SMTP_TIMEOUT_SECONDS a try, retried for minutes. On the main queue a burst of
them took every job slot while the relay did not answer, and everyone's runs
waited behind mail nobody could send. Here at most MAIL_MAX_JOBS mail jobs run
at a time per process, and the main queue's slots stay with runs, blocks and
top-ups.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from arq import func
from arq.worker import Worker

from app.clients.redis import arq_mail_health_check_key, arq_mail_queue_name, arq_redis_settings
from app.settings import Settings
from workers.jobs.notifications import (
    EMAIL_MAX_TRIES,
    send_notification_digest,
    send_notification_email,
)
from workers.lease import leased, shorten_in_progress
from workers.wakeup import WakeableWorker

log = logging.getLogger(__name__)

MAIL_MAX_JOBS = 4
RESTART_SECONDS = 5.0


def mail_functions() -> list:
    """The mail jobs (also registered on the main queue, for jobs queued there by
    processes from before the mail queue)."""
    return [
        func(leased(send_notification_email), timeout=120, max_tries=EMAIL_MAX_TRIES),
        func(leased(send_notification_digest), timeout=120, max_tries=EMAIL_MAX_TRIES),
    ]


@dataclass
class MailLane:
    worker: Worker
    task: asyncio.Task


def start_mail_lane(settings: Settings) -> MailLane:
    worker = shorten_in_progress(
        WakeableWorker(
            functions=mail_functions(),
            queue_name=arq_mail_queue_name(settings),
            redis_settings=arq_redis_settings(settings),
            health_check_key=arq_mail_health_check_key(settings),
            ctx={"settings": settings},
            max_jobs=MAIL_MAX_JOBS,
            # The main worker owns the process's signals and stops this one.
            handle_signals=False,
            poll_delay=settings.WORKER_POLL_SECONDS,
        )
    )
    return MailLane(worker, asyncio.create_task(_work(worker), name="mail-lane"))


async def _work(worker: Worker) -> None:
    while True:
        try:
            await worker.main()
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            # Redis away: the main worker notices too; mail waits in its queue.
            log.exception("the mail lane stopped; starting it again")
            await asyncio.sleep(RESTART_SECONDS)


async def stop_mail_lane(lane: MailLane | None) -> None:
    if lane is None:
        return
    lane.task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await lane.task
    # Mail jobs still waiting on the relay are cancelled and retried later.
    with contextlib.suppress(asyncio.CancelledError):
        await lane.worker.close()
