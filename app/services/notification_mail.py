"""What the mail worker sends: one notification's email, a day's digest; and
the two periodic jobs around them: daily summaries and the sweep that
re-enqueues mail whose enqueue was lost.

Emails are HTML and plain text from the Jinja2 templates in
app/templates/email. Sending is at least once: a mail whose send succeeded
but whose row was not yet marked SENT goes again on the job's retry (with the
same Message-ID, so mail clients show it once).
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from jinja2 import Environment, PackageLoader, select_autoescape

from app.clients.mailer import Mail, Mailer
from app.clock import utcnow
from app.models import (
    CreditTransaction,
    CreditTransactionType,
    EmailStatus,
    Execution,
    ExecutionStatus,
    Notification,
    NotificationPreferences,
    NotificationType,
    User,
)
from app.services import ledger
from app.services.notifications import (
    NewNotification,
    Notifier,
    day_end,
    day_start,
    local_day,
    user_zone,
)
from app.settings import Settings

log = logging.getLogger(__name__)

# Queued mail whose job never came (its process died after the commit) is
# enqueued again after this long.
STRANDED_AFTER = timedelta(minutes=2)
# Days whose digest should have gone by now (any zone's day is over).
DIGEST_OVERDUE_AFTER = timedelta(hours=27)
SUMMARY_LOOKBACK = timedelta(hours=48)

_templates = Environment(
    loader=PackageLoader("app", "templates/email"),
    autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
    keep_trailing_newline=True,
)

KIND_LABELS = {
    NotificationType.AGENT_RUN: "agent run",
    NotificationType.BLOCK_EXECUTION_FAILED: "failed run",
    NotificationType.LOW_BALANCE: "low balance",
    NotificationType.ZERO_BALANCE: "zero balance",
    NotificationType.DAILY_SUMMARY: "daily summary",
    NotificationType.REFUND_PROCESSED: "refund",
    NotificationType.REFUND_REQUEST: "refund request",
    NotificationType.AUTO_TOP_UP_FAILED: "auto top-up",
    NotificationType.DISPUTE_OPENED: "payment dispute",
}
DETAIL_LABELS = {
    "executionId": "Execution",
    "graphId": "Agent",
    "status": "Status",
    "error": "Error",
    "balance": "Balance",
    "amount": "Amount",
    "disputeId": "Dispute",
    "refundRequestId": "Refund request",
}


def _links(settings: Settings) -> dict[str, str]:
    base = settings.FRONTEND_BASE_URL.rstrip("/")
    return {"app_url": base, "settings_url": f"{base}/profile/settings"}


def _message_id(what: str) -> str:
    return f"<{what}@agentgraph>"


def render_notification(settings: Settings, row: Notification, email: str) -> Mail:
    data = row.data or {}
    details = [
        (label, data[name]) for name, label in DETAIL_LABELS.items() if data.get(name) is not None
    ]
    values = {
        "title": row.title,
        "body": row.body,
        "details": details,
        "email": email,
        "kind_label": KIND_LABELS.get(row.type, str(row.type).lower().replace("_", " ")),
        **_links(settings),
    }
    return Mail(
        to=email,
        # Titles carry names users chose: no line breaks in a header.
        subject=" ".join(row.title.split()),
        text=_templates.get_template("notification.txt").render(values),
        html=_templates.get_template("notification.html").render(values),
        message_id=_message_id(f"notification-{row.id}"),
    )


def render_digest(
    settings: Settings, rows: list[Notification], email: str, day: str, daily_limit: int
) -> Mail:
    values = {
        "count": len(rows),
        "day": day,
        "daily_limit": daily_limit,
        "items": [
            {"title": r.title, "body": r.body, "created_at": r.created_at.strftime("%H:%M UTC")}
            for r in rows
        ],
        **_links(settings),
    }
    plural = "s" if len(rows) != 1 else ""
    return Mail(
        to=email,
        subject=f"{len(rows)} more notification{plural} from {day}",
        text=_templates.get_template("digest.txt").render(values),
        html=_templates.get_template("digest.html").render(values),
        message_id=_message_id(f"digest-{rows[0].user_id}-{day}"),  # type: ignore[attr-defined]
    )


def _mailer(settings: Settings) -> Mailer:
    assert settings.SMTP_URL, "mail jobs run only with SMTP_URL set"
    return Mailer(settings.SMTP_URL, settings.MAIL_FROM)


async def send_notification_email(settings: Settings, notification_id: uuid.UUID) -> str:
    row = await Notification.get_or_none(id=notification_id)
    if row is None or row.email_status != EmailStatus.PENDING:
        return "nothing to send"
    if not settings.SMTP_URL:
        await Notification.filter(id=row.id, email_status=EmailStatus.PENDING).update(
            email_status=EmailStatus.NONE
        )
        return "mail is not configured"
    user = await User.get(id=row.user_id).only("email")  # type: ignore[attr-defined]
    await _mailer(settings).send(render_notification(settings, row, user.email))
    await Notification.filter(id=row.id, email_status=EmailStatus.PENDING).update(
        email_status=EmailStatus.SENT, emailed_at=utcnow()
    )
    return "sent"


async def mark_email_failed(notification_id: uuid.UUID) -> None:
    await Notification.filter(id=notification_id, email_status=EmailStatus.PENDING).update(
        email_status=EmailStatus.FAILED
    )


async def mark_digest_failed(user_id: uuid.UUID, day: str) -> None:
    """The day's digest cannot go: its notifications stop waiting for it (the sweep
    would otherwise send it again and again)."""
    await Notification.filter(user_id=user_id, day=day, email_status=EmailStatus.DIGEST).update(
        email_status=EmailStatus.FAILED
    )


async def send_digest(settings: Settings, user_id: uuid.UUID, day: str) -> str:
    """The one email with everything beyond the daily limit of `day`."""
    rows = await Notification.filter(
        user_id=user_id, day=day, email_status=EmailStatus.DIGEST
    ).order_by("created_at", "id")
    if not rows:
        return "nothing to send"
    if not settings.SMTP_URL:
        return "mail is not configured"
    user = await User.get(id=user_id).only("email")
    prefs = await NotificationPreferences.get_or_none(user_id=user_id).only("daily_limit")
    limit = prefs.daily_limit if prefs else 0
    await _mailer(settings).send(render_digest(settings, rows, user.email, day, limit))
    await Notification.filter(id__in=[r.id for r in rows], email_status=EmailStatus.DIGEST).update(
        email_status=EmailStatus.DIGESTED, emailed_at=utcnow()
    )
    return f"sent {len(rows)}"


async def sweep_mail(notifier: Notifier, now: datetime | None = None) -> int:
    """Enqueue again what should be queued and is not (job ids make it harmless
    when it is): mail stuck PENDING, digests of days that are over."""
    now = now or utcnow()
    stranded = await Notification.filter(
        email_status=EmailStatus.PENDING, created_at__lt=now - STRANDED_AFTER
    ).values_list("id", flat=True)
    for notification_id in stranded:
        await notifier.enqueue_email(notification_id)
    overdue = (
        await Notification.filter(
            email_status=EmailStatus.DIGEST, created_at__lt=now - DIGEST_OVERDUE_AFTER
        )
        .distinct()
        .values_list("user_id", "day")
    )
    for user_id, day in overdue:
        await notifier.enqueue_digest(user_id, day, user_zone("UTC"))
    return len(stranded) + len(overdue)


async def create_daily_summaries(notifier: Notifier, now: datetime | None = None) -> int:
    """For every user active lately, a summary of their previous local day
    (runs and credits), once; hourly runs catch each zone's midnight."""
    now = now or utcnow()
    since = now - SUMMARY_LOOKBACK
    active = set(
        await Execution.filter(created_at__gte=since, parent_execution_id=None)
        .distinct()
        .values_list("user_id", flat=True)
    )
    active |= set(
        await CreditTransaction.filter(
            created_at__gte=since, type=CreditTransactionType.USAGE, is_active=True
        )
        .distinct()
        .values_list("user_id", flat=True)
    )
    made = 0
    for user_id in active:
        user = await User.get_or_none(id=user_id).only("id", "timezone")
        if user is None:
            continue
        zone = user_zone(user.timezone)
        day = (datetime.fromisoformat(local_day(now, zone)) - timedelta(days=1)).date().isoformat()
        key = f"daily-summary:{user_id}:{day}"
        if await Notification.exists(key=key):
            continue
        note = await _summary(user_id, day, zone, key)
        if note is not None and await notifier.notify(user_id, note) is not None:
            made += 1
    return made


async def _summary(
    user_id: uuid.UUID, day: str, zone: ZoneInfo, key: str
) -> NewNotification | None:
    start, end = day_start(day, zone), day_end(day, zone)
    runs = await Execution.filter(
        user_id=user_id,
        parent_execution_id=None,
        is_deleted=False,
        created_at__gte=start,
        created_at__lt=end,
    ).values_list("status", flat=True)
    usage = await CreditTransaction.filter(
        user_id=user_id,
        type=CreditTransactionType.USAGE,
        is_active=True,
        created_at__gte=start,
        created_at__lt=end,
    ).values_list("amount", flat=True)
    spent = -sum(usage)
    if not runs and not spent:
        return None
    completed = sum(1 for s in runs if s == ExecutionStatus.COMPLETED)
    failed = sum(1 for s in runs if s == ExecutionStatus.FAILED)
    balance = await ledger.get_balance(user_id)
    return NewNotification(
        type=NotificationType.DAILY_SUMMARY,
        key=key,
        title=f"Your day on agentgraph: {day}",
        body=(
            f"{len(runs)} run{'s' if len(runs) != 1 else ''} ({completed} completed, "
            f"{failed} failed), {spent} credits spent; your balance is {balance} credits."
        ),
        data={
            "day": day,
            "runs": len(runs),
            "completed": completed,
            "failed": failed,
            "spent": spent,
            "balance": balance,
        },
    )
