"""Onboarding progress, rewards and status."""

from __future__ import annotations

import strawberry

from app.context import Info
from app.services import feature_flags, onboarding, store
from schema.inputs.onboarding import OnboardingInput
from schema.permissions import SignedInUser
from schema.types.onboarding import Onboarding, OnboardingStatus, OnboardingStep
from schema.types.store import StoreAgent


@strawberry.type
class OnboardingQueries:
    @strawberry.field(permission_classes=[SignedInUser])
    async def onboarding(self, info: Info) -> Onboarding:
        return Onboarding.from_model(await onboarding.get_onboarding(await info.context.user_id()))

    @strawberry.field(permission_classes=[SignedInUser])
    async def onboarding_status(self, info: Info) -> OnboardingStatus:
        status = await feature_flags.onboarding_status(
            info.context.settings, await info.context.user_id()
        )
        return OnboardingStatus.from_data(status)

    @strawberry.field(
        permission_classes=[SignedInUser],
        description="Published agents recommended for this user's onboarding.",
    )
    async def recommended_agents(self, info: Info) -> list[StoreAgent]:
        items = await store.recommended_agents(await info.context.user_id())
        return [StoreAgent.from_recommendation(item) for item in items]


@strawberry.type
class OnboardingMutations:
    @strawberry.mutation(permission_classes=[SignedInUser])
    async def update_onboarding(self, info: Info, input: OnboardingInput) -> Onboarding:
        update = onboarding.OnboardingUpdate(
            usage_reason=input.usage_reason,
            integrations=input.integrations,
            other_integrations=input.other_integrations,
            selected_store_listing_version_id=input.selected_store_listing_version_id,
            agent_input=input.agent_input,
            onboarding_agent_execution_id=input.onboarding_agent_execution_id,
        )
        return Onboarding.from_model(
            await onboarding.update_onboarding(await info.context.user_id(), update)
        )

    @strawberry.mutation(
        permission_classes=[SignedInUser],
        description=(
            "Only the steps a client observes itself (WELCOME, USAGE_REASON, INTEGRATIONS, "
            "AGENT_CHOICE, AGENT_NEW_RUN, AGENT_INPUT, CONGRATS, MARKETPLACE_VISIT, "
            "BUILDER_OPEN); the server completes the others when they happen."
        ),
    )
    async def complete_onboarding_step(self, info: Info, step: OnboardingStep) -> Onboarding:
        row = await onboarding.complete_client_step(
            info.context.settings, await info.context.user_id(), step
        )
        return Onboarding.from_model(row)

    @strawberry.mutation(permission_classes=[SignedInUser])
    async def reset_onboarding(self, info: Info) -> Onboarding:
        return Onboarding.from_model(
            await onboarding.reset_onboarding(await info.context.user_id())
        )
