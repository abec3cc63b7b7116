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

from arq import func

from app.clients.redis import arq_mail_health_check_key, arq_mail_queue_name
from app.settings import Settings
from workers.jobs.notifications import (
    EMAIL_MAX_TRIES,
    send_notification_digest,
    send_notification_email,
)
from workers.lanes import Lane, LaneSpec, start_lane
from workers.lease import leased

MAIL_MAX_JOBS = 4


def mail_functions() -> list:
    """The mail jobs (also registered on the main queue, for jobs queued there by
    processes from before the mail queue)."""
    return [
        func(leased(send_notification_email), timeout=120, max_tries=EMAIL_MAX_TRIES),
        func(leased(send_notification_digest), timeout=120, max_tries=EMAIL_MAX_TRIES),
    ]


def start_mail_lane(settings: Settings) -> Lane:
    spec = LaneSpec(
        name="mail lane",
        functions=mail_functions(),
        queue_name=arq_mail_queue_name(settings),
        health_check_key=arq_mail_health_check_key(settings),
        ctx={"settings": settings},
        max_jobs=MAIL_MAX_JOBS,
    )
    return start_lane(settings, spec)
