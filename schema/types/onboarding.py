"""Onboarding progress and status; store agents recommended during it."""

from __future__ import annotations

from datetime import datetime

import strawberry
from strawberry.scalars import JSON

from app import models
from app.services.feature_flags import OnboardingStatus as OnboardingStatusData

OnboardingStep = strawberry.enum(models.OnboardingStep, name="OnboardingStep")


@strawberry.type
class Onboarding:
    completed_steps: list[OnboardingStep]
    rewarded_for: list[OnboardingStep] = strawberry.field(
        description="Steps whose credit reward has been granted."
    )
    usage_reason: str | None
    integrations: list[str]
    other_integrations: str | None
    selected_store_listing_version_id: strawberry.ID | None
    agent_input: JSON | None
    onboarding_agent_execution_id: strawberry.ID | None
    agent_runs: int
    updated_at: datetime | None
    id: strawberry.ID = strawberry.field(
        description="The user's id: one per user, so client caches keep a single copy."
    )

    @classmethod
    def from_model(cls, row: models.UserOnboarding) -> Onboarding:
        def steps(names: list[str]) -> list[models.OnboardingStep]:
            return [models.OnboardingStep(name) for name in names]

        return cls(
            completed_steps=steps(row.completed_steps),
            rewarded_for=steps(row.rewarded_for),
            usage_reason=row.usage_reason,
            integrations=list(row.integrations),
            other_integrations=row.other_integrations,
            selected_store_listing_version_id=row.selected_store_listing_version_id,
            agent_input=row.agent_input,
            onboarding_agent_execution_id=row.onboarding_agent_execution_id,
            agent_runs=row.agent_runs,
            updated_at=row.updated_at,
            id=row.user_id,  # type: ignore[attr-defined]
        )


@strawberry.type
class OnboardingStatus:
    is_onboarding_enabled: bool
    is_chat_enabled: bool

    @classmethod
    def from_data(cls, data: OnboardingStatusData) -> OnboardingStatus:
        return cls(
            is_onboarding_enabled=data.is_onboarding_enabled,
            is_chat_enabled=data.is_chat_enabled,
        )
