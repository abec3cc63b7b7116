"""Notification mail, off the request path: one email per notification (with
retries), a day's digest, daily summaries, and the sweep for lost enqueues."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from arq import Retry

from app.clients.mailer import PermanentMailError
from app.services import notification_mail

log = logging.getLogger(__name__)

# Must match max_tries of these jobs in workers/settings.py; the last try
# marks the email FAILED instead of retrying.
EMAIL_MAX_TRIES = 8
RETRY_MAX_SECONDS = 300


def _retry_or_give_up(ctx: dict[str, Any], what: str) -> Retry | None:
    job_try = ctx.get("job_try", 1)
    if job_try >= EMAIL_MAX_TRIES:
        log.error("%s failed on its last try; giving up", what, exc_info=True)
        return None
    defer = min(RETRY_MAX_SECONDS, 2 ** (job_try - 1))
    log.warning("%s failed (try %d); again in %d s", what, job_try, defer, exc_info=True)
    return Retry(defer=defer)


async def send_notification_email(ctx: dict[str, Any], notification_id: str) -> str:
    parsed = uuid.UUID(notification_id)
    try:
        return await notification_mail.send_notification_email(ctx["settings"], parsed)
    except asyncio.CancelledError:
        raise
    except PermanentMailError as error:
        log.warning("email of notification %s refused for good: %s", parsed, error)
        await notification_mail.mark_email_failed(parsed)
        return f"failed: {error}"
    except Exception:
        retry = _retry_or_give_up(ctx, f"email of notification {parsed}")
        if retry is None:
            await notification_mail.mark_email_failed(parsed)
            return "failed"
        raise retry from None


async def send_notification_digest(ctx: dict[str, Any], user_id: str, day: str) -> str:
    parsed = uuid.UUID(user_id)
    try:
        return await notification_mail.send_digest(ctx["settings"], parsed, day)
    except asyncio.CancelledError:
        raise
    except PermanentMailError as error:
        log.warning("digest of %s for %s refused for good: %s", user_id, day, error)
        await notification_mail.mark_digest_failed(parsed, day)
        return f"failed: {error}"
    except Exception:
        retry = _retry_or_give_up(ctx, f"digest of {user_id} for {day}")
        if retry is None:
            await notification_mail.mark_digest_failed(parsed, day)
            return "failed"
        raise retry from None


async def create_daily_summaries(ctx: dict[str, Any]) -> int:
    """Hourly; each user's summary of their previous local day, once."""
    made = await notification_mail.create_daily_summaries(ctx["notifier"])
    if made:
        log.info("made %d daily summaries", made)
    return made


async def sweep_notification_mail(ctx: dict[str, Any]) -> int:
    return await notification_mail.sweep_mail(ctx["notifier"])
