"""Notifications: the list, marking read, and the live stream. Signed-in people only."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Annotated

import strawberry

from app.context import Info
from app.errors import AppError, ErrorCode
from app.events import SubscriberTooSlow
from app.services import notification_inbox
from app.services.notifications import unread_count
from schema.permissions import SignedInUser
from schema.types.graphs import PageInfo
from schema.types.notifications import (
    Notification,
    NotificationConnection,
    NotificationEdge,
    NotificationEvent,
)


@strawberry.type
class NotificationQueries:
    @strawberry.field(
        permission_classes=[SignedInUser], description="The user's notifications, newest first."
    )
    async def notifications(
        self,
        info: Info,
        unread_only: bool = False,
        first: Annotated[int, strawberry.argument(description="1 to 100.")] = 20,
        after: str | None = None,
    ) -> NotificationConnection:
        page = await notification_inbox.list_notifications(
            await info.context.user_id(), unread_only, first, after
        )
        edges = [
            NotificationEdge(cursor=page.cursor(row), node=Notification.from_model(row))
            for row in page.rows
        ]
        return NotificationConnection(
            edges=edges,
            page_info=PageInfo(
                has_next_page=page.has_next, end_cursor=edges[-1].cursor if edges else None
            ),
            total_count=page.total,
            unread_count=page.unread,
        )


@strawberry.type
class NotificationMutations:
    @strawberry.mutation(
        permission_classes=[SignedInUser],
        description=(
            "Marks the caller's notifications read (every unread one when ids is left out); "
            "returns how many changed."
        ),
    )
    async def mark_notifications_read(
        self,
        info: Info,
        ids: Annotated[
            list[strawberry.ID] | None, strawberry.argument(description="At most 1000.")
        ] = None,
    ) -> int:
        return await notification_inbox.mark_read(
            info.context.services.notifier,
            await info.context.user_id(),
            [str(i) for i in ids] if ids is not None else None,
        )


@strawberry.type
class NotificationSubscription:
    @strawberry.subscription(
        permission_classes=[SignedInUser],
        description=(
            "The caller's notifications as they are made. The first event is a snapshot "
            "(no notification, the unread count); after a reconnect, read `notifications` "
            "for what came in between."
        ),
    )
    async def notification_events(self, info: Info) -> AsyncGenerator[NotificationEvent, None]:
        user_id = await info.context.user_id()
        services = info.context.services
        key = services.events.keys.user_stream(user_id)
        # Listening starts before the snapshot is read: nothing is missed.
        async with services.hub.subscribe(key, None) as sub:
            yield NotificationEvent(notification=None, unread_count=await unread_count(user_id))
            while True:
                try:
                    event = await sub.next()
                except SubscriberTooSlow:
                    raise AppError(ErrorCode.INTERNAL, "Subscriber fell too far behind") from None
                snapshot = event.data.get("notification")
                yield NotificationEvent(
                    notification=Notification.from_snapshot(snapshot) if snapshot else None,
                    unread_count=event.data["unreadCount"],
                )
