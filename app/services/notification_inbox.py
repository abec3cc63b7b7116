"""The in-app side of notifications: the user's list and marking them read."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from app.clock import utcnow
from app.errors import bad_input
from app.models import Notification
from app.services.notifications import Notifier, unread_count
from app.services.pagination import check_page_size, encode_cursor, rows_after

MAX_PAGE = 100
MAX_IDS = 1000


@dataclass(frozen=True)
class NotificationPage:
    rows: list[Notification]
    total: int
    unread: int
    has_next: bool

    def cursor(self, row: Notification) -> str:
        return encode_cursor(row.created_at, row.id)


def _uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


async def list_notifications(
    user_id: uuid.UUID, unread_only: bool, first: int, after: str | None
) -> NotificationPage:
    """Newest first."""
    check_page_size(first, MAX_PAGE)
    base = Notification.filter(user_id=user_id)
    if unread_only:
        base = base.filter(read_at=None)
    query = base
    if after:
        query = query.filter(rows_after(after))
    rows = await query.order_by("-created_at", "-id").limit(first + 1)
    return NotificationPage(
        rows[:first], await base.count(), await unread_count(user_id), len(rows) > first
    )


async def mark_read(notifier: Notifier, user_id: uuid.UUID, ids: list[str] | None) -> int:
    """Marks the user's notifications read (all unread ones when `ids` is None);
    returns how many changed. Ids that are not the user's are ignored, like
    absent ones."""
    query = Notification.filter(user_id=user_id, read_at=None)
    if ids is not None:
        if len(ids) > MAX_IDS:
            raise bad_input(f"at most {MAX_IDS} ids at once", field="ids")
        parsed = [p for p in (_uuid(i) for i in ids) if p is not None]
        if not parsed:
            return 0
        query = query.filter(id__in=parsed)
    changed = await query.update(read_at=utcnow())
    if changed:
        await notifier.publish(user_id, None)
    return changed
