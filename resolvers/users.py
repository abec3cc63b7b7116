"""me, email, time zone, notification preferences."""

from __future__ import annotations

import strawberry

from app.context import Info
from app.services import users
from schema.inputs.users import NotificationPreferencesInput
from schema.permissions import SignedInUser
from schema.types.users import NotificationPreferences, User


@strawberry.type
class UserQueries:
    @strawberry.field(
        permission_classes=[SignedInUser],
        description="The signed-in user; created on first sight of a valid token.",
    )
    async def me(self, info: Info) -> User:
        principal = await info.context.principal()
        return User.from_row(await users.me(info.context.settings, principal))


@strawberry.type
class UserMutations:
    @strawberry.mutation(permission_classes=[SignedInUser])
    async def update_email(self, info: Info, email: str) -> User:
        return User.from_model(await users.update_email(await info.context.user_id(), email))

    @strawberry.mutation(
        permission_classes=[SignedInUser],
        description="An IANA time zone name, e.g. Europe/Berlin.",
    )
    async def update_timezone(self, info: Info, timezone: str) -> User:
        return User.from_model(await users.update_timezone(await info.context.user_id(), timezone))

    @strawberry.mutation(permission_classes=[SignedInUser])
    async def update_notification_preferences(
        self, info: Info, input: NotificationPreferencesInput
    ) -> NotificationPreferences:
        settings = (
            [(s.type, s.enabled) for s in input.settings] if input.settings is not None else None
        )
        row = await users.update_notification_preferences(
            await info.context.user_id(), settings, input.daily_limit
        )
        return NotificationPreferences.from_model(row)
