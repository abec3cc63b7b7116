"""Notifications: made once per thing they are about, shown in the app at once,
emailed by a worker job.

`Notifier.notify` is the one way in. It does nothing when the user turned that
notification type off (in-app and email alike), or when the same key was
notified before (a replayed webhook, a resumed run). Otherwise it stores the
notification and decides its email under the user's preferences row lock, so
concurrent notifications count against the daily limit one at a time:

- SMTP_URL unset: no email (in-app only);
- fewer than `dailyLimit` emails so far that day (the user's local day): its
  own email, sent by the `send_notification_email` job;
- beyond: it waits for the day's digest, one email after the day ends
  (`send_notification_digest`, deferred to the user's next midnight).

After the commit it goes to the user's event stream (notificationEvents) and
the mail job is enqueued; a sweep re-enqueues mail whose enqueue was lost.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from arq import ArqRedis
from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from app.clients.redis import arq_job_id, arq_mail_queue_name
from app.clock import utcnow
from app.events import EventPublisher
from app.models import (
    CreditTransaction,
    EmailStatus,
    Execution,
    ExecutionStatus,
    Graph,
    GraphSource,
    Notification,
    NotificationPreferences,
    NotificationType,
    User,
)
from app.services.users import DEFAULT_DAILY_LIMIT
from app.settings import Settings

log = logging.getLogger(__name__)

EMAIL_JOB = "send_notification_email"
DIGEST_JOB = "send_notification_digest"
# A digest waits this long past the user's midnight, so the day's last
# notifications have committed.
DIGEST_GRACE = timedelta(minutes=1)
# Emails that count against the daily limit.
COUNTED = (EmailStatus.PENDING, EmailStatus.SENT, EmailStatus.FAILED)


@dataclass(frozen=True)
class NewNotification:
    type: NotificationType
    # What it is about; one notification per key, ever.
    key: str
    title: str
    body: str
    data: dict[str, Any] | None = None


def user_zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ValueError, KeyError):
        return ZoneInfo("UTC")


def local_day(moment: datetime, zone: ZoneInfo) -> str:
    return moment.astimezone(zone).date().isoformat()


def day_start(day: str, zone: ZoneInfo) -> datetime:
    """The UTC instant the user's local `day` starts (their midnight)."""
    return datetime.fromisoformat(day).replace(tzinfo=zone).astimezone(ZoneInfo("UTC"))


def day_end(day: str, zone: ZoneInfo) -> datetime:
    """The UTC instant the user's local `day` ends (their next midnight)."""
    following = (datetime.fromisoformat(day) + timedelta(days=1)).date().isoformat()
    return day_start(following, zone)


def snapshot(row: Notification) -> dict[str, Any]:
    """A notification as events carry it (the GraphQL type reads it back)."""
    return {
        "id": str(row.id),
        "type": str(row.type),
        "title": row.title,
        "body": row.body,
        "data": row.data,
        "createdAt": row.created_at.isoformat(),
        "readAt": row.read_at.isoformat() if row.read_at else None,
        "emailStatus": str(row.email_status),
    }


async def unread_count(user_id: uuid.UUID) -> int:
    return await Notification.filter(user_id=user_id, read_at=None).count()


class Notifier:
    def __init__(self, settings: Settings, redis: ArqRedis) -> None:
        self.settings = settings
        self.redis = redis
        self.publisher = EventPublisher(redis, settings.REDIS_PREFIX)

    @property
    def emails(self) -> bool:
        return bool(self.settings.SMTP_URL)

    async def notify(self, user_id: uuid.UUID, note: NewNotification) -> Notification | None:
        """Store, show and (maybe) email one notification; None when it was not
        made (turned off, or already made for this key)."""
        if await Notification.exists(key=note.key):
            return None
        user = await User.get_or_none(id=user_id).only("id", "timezone")
        if user is None:
            return None
        zone = user_zone(user.timezone)
        try:
            async with in_transaction() as conn:
                prefs = await _locked_preferences(user_id, conn)
                if not prefs.settings.get(note.type.value, True):
                    return None
                now = utcnow()
                day = local_day(now, zone)
                status = EmailStatus.NONE
                if self.emails:
                    sent = (
                        await Notification.filter(
                            user_id=user_id, day=day, email_status__in=COUNTED
                        )
                        .using_db(conn)
                        .count()
                    )
                    status = EmailStatus.PENDING if sent < prefs.daily_limit else EmailStatus.DIGEST
                row = await Notification.create(
                    id=uuid.uuid4(),
                    user_id=user_id,
                    type=note.type,
                    key=note.key,
                    title=note.title[:300],
                    body=note.body,
                    data=note.data,
                    created_at=now,
                    day=day,
                    email_status=status,
                    using_db=conn,
                )
        except IntegrityError:
            return None  # the same key, notified at the same moment elsewhere
        await self._deliver(row, zone)
        return row

    async def _deliver(self, row: Notification, zone: ZoneInfo) -> None:
        # The row is stored: a failure here loses only the live event (the list
        # still shows it) or an enqueue (the sweep makes it again).
        try:
            await self.publish(row.user_id, row)  # type: ignore[attr-defined]
        except Exception:
            log.warning("could not publish notification %s", row.id, exc_info=True)
        try:
            if row.email_status == EmailStatus.PENDING:
                await self.enqueue_email(row.id)
            elif row.email_status == EmailStatus.DIGEST:
                await self.enqueue_digest(row.user_id, row.day, zone)  # type: ignore[attr-defined]
        except Exception:
            log.warning("could not enqueue the email of notification %s", row.id, exc_info=True)

    async def publish(self, user_id: uuid.UUID, row: Notification | None) -> None:
        """Tell the user's live subscribers: a new notification (or None after
        some were read), with the unread count."""
        await self.publisher.publish_to_user(
            user_id,
            {
                "kind": "notification",
                "notification": snapshot(row) if row is not None else None,
                "unreadCount": await unread_count(user_id),
            },
        )

    # Mail goes on its own queue: waiting for an SMTP relay must never take the
    # job slots that runs need (workers/mail_lane.py).
    async def enqueue_email(self, notification_id: uuid.UUID) -> None:
        await self.redis.enqueue_job(
            EMAIL_JOB,
            str(notification_id),
            _job_id=email_job_id(self.settings, notification_id),
            _queue_name=arq_mail_queue_name(self.settings),
        )

    async def enqueue_digest(self, user_id: uuid.UUID, day: str, zone: ZoneInfo) -> None:
        due = day_end(day, zone) + DIGEST_GRACE
        await self.redis.enqueue_job(
            DIGEST_JOB,
            str(user_id),
            day,
            _job_id=digest_job_id(self.settings, user_id, day),
            _queue_name=arq_mail_queue_name(self.settings),
            # A day that is over already (the sweep's catch-up) goes at once.
            _defer_until=due if due > utcnow() else None,
        )

    # ------------------------------------------------------------ hooks

    async def balance_dropped(self, user_id: uuid.UUID, before: int, after: int) -> None:
        """After a charge: warn once when it takes the balance below
        LOW_BALANCE_CREDITS. Going below again needs credits added first, so the
        latest credit-adding row names this descent (a replayed charge finds
        the same one)."""
        threshold = self.settings.LOW_BALANCE_CREDITS
        if not before >= threshold > after:
            return
        try:
            latest_credit = (
                await CreditTransaction.filter(user_id=user_id, is_active=True, amount__gt=0)
                .order_by("-created_at", "-id")
                .first()
                .values_list("id", flat=True)
            )
            await self.notify(
                user_id,
                NewNotification(
                    type=NotificationType.LOW_BALANCE,
                    key=f"low-balance:{user_id}:{latest_credit}",
                    title="Your credits are running low",
                    body=(
                        f"Your balance is {after} credits, below {threshold}. "
                        "Top up so your agents keep running."
                    ),
                    data={"balance": after, "threshold": threshold},
                ),
            )
        except Exception:
            log.exception("low-balance notification for %s failed", user_id)


def email_job_id(settings: Settings, notification_id: uuid.UUID | str) -> str:
    return arq_job_id(settings, "notification-email", notification_id)


def digest_job_id(settings: Settings, user_id: uuid.UUID | str, day: str) -> str:
    return arq_job_id(settings, "notification-digest", f"{user_id}:{day}")


async def _locked_preferences(user_id: uuid.UUID, conn) -> NotificationPreferences:
    prefs = (
        await NotificationPreferences.select_for_update()
        .using_db(conn)
        .get_or_none(user_id=user_id)
    )
    if prefs is None:
        await NotificationPreferences.create(
            user_id=user_id, settings={}, daily_limit=DEFAULT_DAILY_LIMIT, using_db=conn
        )
        prefs = (
            await NotificationPreferences.select_for_update().using_db(conn).get(user_id=user_id)
        )
    return prefs


async def notify_run_ended(notifier: Notifier | None, execution: Execution) -> None:
    """The engine's one call when a run ends: scheduled runs, and runs that took
    at least LONG_RUN_NOTIFY_SECONDS, notify their owner whether they completed
    or failed (a stopped run was stopped by someone who knows). Sub-graph runs
    are part of their parent's."""
    if notifier is None or execution.parent_execution_id is not None:  # type: ignore[attr-defined]
        return
    try:
        note = await _run_ended_notification(notifier.settings, execution)
        if note is not None:
            await notifier.notify(execution.user_id, note)  # type: ignore[attr-defined]
    except Exception:
        log.exception("notifying the end of execution %s failed", execution.id)


async def _run_ended_notification(
    settings: Settings, execution: Execution
) -> NewNotification | None:
    if execution.status == ExecutionStatus.COMPLETED:
        kind = NotificationType.AGENT_RUN
    elif execution.status == ExecutionStatus.FAILED:
        kind = NotificationType.BLOCK_EXECUTION_FAILED
    else:
        return None
    started, ended = execution.started_at, execution.ended_at or utcnow()
    seconds = (ended - started).total_seconds() if started else 0.0
    scheduled = execution.source == GraphSource.SCHEDULE
    if not scheduled and seconds < settings.LONG_RUN_NOTIFY_SECONDS:
        return None
    graph = await Graph.get_or_none(
        graph_id=execution.graph_id, version=execution.graph_version
    ).only("name")
    name = graph.name if graph else "your agent"
    which = "scheduled run" if scheduled else "run"
    if kind == NotificationType.AGENT_RUN:
        title = f"Your {which} of {name} finished"
        body = f"The {which} of {name} completed in {seconds:.0f} s."
    else:
        title = f"Your {which} of {name} failed"
        body = f"The {which} of {name} failed: {execution.error or 'a node failed'}"
    return NewNotification(
        type=kind,
        key=f"run-ended:{execution.id}",
        title=title,
        body=body,
        data={
            "executionId": str(execution.id),
            "graphId": str(execution.graph_id),
            "graphVersion": execution.graph_version,
            "status": str(execution.status),
            "error": execution.error,
            "scheduled": scheduled,
        },
    )
