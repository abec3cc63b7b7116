"""Feature flags: defaults from settings, per-user overrides from the database."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from app.models import FeatureFlagOverride
from app.settings import Settings


async def is_enabled(settings: Settings, user_id: uuid.UUID, flag: str) -> bool:
    override = await FeatureFlagOverride.get_or_none(user_id=user_id, flag=flag)
    if override is not None:
        return override.enabled
    return bool(settings.FEATURE_FLAGS.get(flag, False))


async def set_override(user_id: uuid.UUID, flag: str, enabled: bool | None) -> None:
    """Pin a flag for one user; None removes the override (back to the default)."""
    if enabled is None:
        await FeatureFlagOverride.filter(user_id=user_id, flag=flag).delete()
        return
    await FeatureFlagOverride.update_or_create(
        defaults={"enabled": enabled}, user_id=user_id, flag=flag
    )


@dataclass(frozen=True)
class OnboardingStatus:
    is_onboarding_enabled: bool
    is_chat_enabled: bool


async def onboarding_status(settings: Settings, user_id: uuid.UUID) -> OnboardingStatus:
    chat = await is_enabled(settings, user_id, "CHAT")
    # Chat replaces onboarding for the users who have it.
    return OnboardingStatus(
        is_onboarding_enabled=(not chat) and settings.ONBOARDING_ENABLED,
        is_chat_enabled=chat,
    )
