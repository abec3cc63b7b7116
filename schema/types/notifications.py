"""Notifications as clients see them: the list, and the live events."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import strawberry
from strawberry.scalars import JSON

from app import models
from schema.types.graphs import PageInfo
from schema.types.users import NotificationType

NotificationEmailStatus = strawberry.enum(
    models.EmailStatus,
    name="NotificationEmailStatus",
    description=(
        "NONE: no email (mail is not configured); PENDING: queued; SENT; DIGEST: beyond the "
        "daily limit, waiting for that day's digest; DIGESTED: sent in a digest; FAILED."
    ),
)


@strawberry.type
class Notification:
    id: strawberry.ID
    type: NotificationType
    title: str
    body: str
    data: JSON | None = strawberry.field(
        description="Ids and figures it is about (executionId, amount, …)."
    )
    created_at: datetime
    read_at: datetime | None
    email_status: NotificationEmailStatus

    @classmethod
    def from_model(cls, row: models.Notification) -> Notification:
        return cls(
            id=strawberry.ID(str(row.id)),
            type=row.type,
            title=row.title,
            body=row.body,
            data=row.data,
            created_at=row.created_at,
            read_at=row.read_at,
            email_status=row.email_status,
        )

    @classmethod
    def from_snapshot(cls, data: dict[str, Any]) -> Notification:
        return cls(
            id=strawberry.ID(data["id"]),
            type=models.NotificationType(data["type"]),
            title=data["title"],
            body=data["body"],
            data=data.get("data"),
            created_at=datetime.fromisoformat(data["createdAt"]),
            read_at=datetime.fromisoformat(data["readAt"]) if data.get("readAt") else None,
            email_status=models.EmailStatus(data["emailStatus"]),
        )


@strawberry.type
class NotificationEdge:
    cursor: str
    node: Notification


@strawberry.type
class NotificationConnection:
    edges: list[NotificationEdge]
    page_info: PageInfo
    total_count: int
    unread_count: int


@strawberry.type(
    description=(
        "The first event is a snapshot (no notification, the current unread count); then "
        "one per new notification, and one (without a notification) when some were read."
    )
)
class NotificationEvent:
    notification: Notification | None
    unread_count: int
