"""User, notification preferences."""

from __future__ import annotations

from datetime import datetime

import strawberry

from app import models
from app.context import Info
from app.services import ledger, users

NotificationType = strawberry.enum(models.NotificationType, name="NotificationType")


@strawberry.type
class NotificationSetting:
    type: NotificationType
    enabled: bool


@strawberry.type
class NotificationPreferences:
    settings: list[NotificationSetting]
    daily_limit: int
    id: strawberry.ID = strawberry.field(
        description="The user's id: one per user, so client caches keep a single copy."
    )

    @classmethod
    def from_model(cls, row: models.NotificationPreferences) -> NotificationPreferences:
        return cls(
            settings=[
                NotificationSetting(type=kind, enabled=on)
                for kind, on in users.notification_settings(row)
            ],
            daily_limit=row.daily_limit,
            id=row.user_id,  # type: ignore[attr-defined]
        )


@strawberry.type
class User:
    id: strawberry.ID
    email: str
    name: str | None
    timezone: str
    created_at: datetime
    # The balance, when it was read with the user (`me`).
    known_credits: strawberry.Private[int | None] = None

    @strawberry.field(description="Current balance in credits.")
    async def credits(self, info: Info) -> int:
        if self.known_credits is not None:
            return self.known_credits
        return await ledger.get_balance(self.id)

    @strawberry.field
    async def notification_preferences(self, info: Info) -> NotificationPreferences:
        return NotificationPreferences.from_model(await users.get_notification_preferences(self.id))

    @classmethod
    def from_row(cls, row: dict) -> User:
        """From users.user_with_balance."""
        return cls(
            id=row["id"],
            email=row["email"],
            name=row["name"],
            timezone=row["timezone"],
            created_at=row["created_at"],
            known_credits=row["balance"],
        )

    @classmethod
    def from_model(cls, row: models.User) -> User:
        return cls(
            id=row.id,
            email=row.email,
            name=row.name,
            timezone=row.timezone,
            created_at=row.created_at,
        )
