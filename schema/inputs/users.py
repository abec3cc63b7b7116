from __future__ import annotations

import strawberry

from schema.types.users import NotificationType


@strawberry.input
class NotificationSettingInput:
    type: NotificationType
    enabled: bool


@strawberry.input
class NotificationPreferencesInput:
    settings: list[NotificationSettingInput] | None = None
    daily_limit: int | None = None
