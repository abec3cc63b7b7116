from __future__ import annotations

import strawberry
from strawberry.scalars import JSON


@strawberry.input
class OnboardingInput:
    usage_reason: str | None = None
    integrations: list[str] | None = None
    other_integrations: str | None = None
    selected_store_listing_version_id: strawberry.ID | None = None
    agent_input: JSON | None = None
    onboarding_agent_execution_id: strawberry.ID | None = None
