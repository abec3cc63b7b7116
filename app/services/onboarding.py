"""Onboarding progress: steps, once-only rewards, reset."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from tortoise.transactions import in_transaction

from app.clock import utcnow
from app.errors import bad_input
from app.models import CreditTransactionType, GraphSource, OnboardingStep, UserOnboarding
from app.services import ledger
from app.settings import Settings

_MAX_TEXT = 500
_MAX_INTEGRATIONS = 50

# The steps a client observes itself and may report (SEMANTICS.md §4). The
# others record what the server saw (a run, a saved graph, a schedule, results
# read), and only the server completes them, so their rewards cannot be
# claimed by hand.
CLIENT_STEPS = frozenset(
    {
        OnboardingStep.WELCOME,
        OnboardingStep.USAGE_REASON,
        OnboardingStep.INTEGRATIONS,
        OnboardingStep.AGENT_CHOICE,
        OnboardingStep.AGENT_NEW_RUN,
        OnboardingStep.AGENT_INPUT,
        OnboardingStep.CONGRATS,
        OnboardingStep.MARKETPLACE_VISIT,
        OnboardingStep.BUILDER_OPEN,
    }
)


def reward_key(user_id: uuid.UUID, step: OnboardingStep) -> str:
    return f"onboarding-reward:{user_id}:{step.value}"


async def get_onboarding(user_id: uuid.UUID) -> UserOnboarding:
    onboarding, _ = await UserOnboarding.get_or_create(user_id=user_id)
    return onboarding


@dataclass
class OnboardingUpdate:
    """Only the fields a client sent; None means 'leave as it is'."""

    usage_reason: str | None = None
    integrations: list[str] | None = None
    other_integrations: str | None = None
    selected_store_listing_version_id: str | None = None
    agent_input: Any = None
    onboarding_agent_execution_id: str | None = None


def _uuid_or_error(value: str, field: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError as exc:
        raise bad_input(f"{field} must be a UUID", field=field) from exc


def _text_or_error(value: str, field: str) -> str:
    if len(value) > _MAX_TEXT:
        raise bad_input(f"{field} is longer than {_MAX_TEXT} characters", field=field)
    return value


async def update_onboarding(user_id: uuid.UUID, update: OnboardingUpdate) -> UserOnboarding:
    # Validate everything before writing anything.
    changes: dict[str, Any] = {}
    if update.usage_reason is not None:
        changes["usage_reason"] = _text_or_error(update.usage_reason, "usageReason")
    if update.integrations is not None:
        if len(update.integrations) > _MAX_INTEGRATIONS:
            raise bad_input(f"At most {_MAX_INTEGRATIONS} integrations", field="integrations")
        changes["integrations"] = [
            _text_or_error(name, "integrations") for name in dict.fromkeys(update.integrations)
        ]
    if update.other_integrations is not None:
        changes["other_integrations"] = _text_or_error(
            update.other_integrations, "otherIntegrations"
        )
    if update.selected_store_listing_version_id is not None:
        changes["selected_store_listing_version_id"] = _uuid_or_error(
            update.selected_store_listing_version_id, "selectedStoreListingVersionId"
        )
    if update.agent_input is not None:
        if not isinstance(update.agent_input, dict):
            raise bad_input("agentInput must be an object", field="agentInput")
        changes["agent_input"] = update.agent_input
    if update.onboarding_agent_execution_id is not None:
        changes["onboarding_agent_execution_id"] = _uuid_or_error(
            update.onboarding_agent_execution_id, "onboardingAgentExecutionId"
        )
    onboarding = await get_onboarding(user_id)
    if not changes:
        return onboarding
    changes["updated_at"] = utcnow()
    await UserOnboarding.filter(user_id=user_id).update(**changes)
    return await get_onboarding(user_id)


async def complete_client_step(
    settings: Settings, user_id: uuid.UUID, step: OnboardingStep
) -> UserOnboarding:
    """A step the client reports; BAD_USER_INPUT (and nothing changes) for the
    steps only the server completes."""
    if step not in CLIENT_STEPS:
        raise bad_input(
            f"{step.value} is completed by the server when it happens, not by the client",
            field="step",
        )
    return await complete_step(settings, user_id, step)


async def complete_step(
    settings: Settings, user_id: uuid.UUID, step: OnboardingStep
) -> UserOnboarding:
    """Idempotent; grants the step's reward the first time ever (kept across resets)."""
    await get_onboarding(user_id)
    async with in_transaction() as conn:
        onboarding = await UserOnboarding.select_for_update().using_db(conn).get(user_id=user_id)
        changed = False
        if step.value not in onboarding.completed_steps:
            onboarding.completed_steps = [*onboarding.completed_steps, step.value]
            changed = True
        reward = settings.ONBOARDING_REWARDS.get(step.value, 0)
        if reward > 0 and step.value not in onboarding.rewarded_for:
            # The unique ledger key is the real guard; rewarded_for shows it.
            await ledger.record_transaction(
                user_id,
                reward,
                CreditTransactionType.GRANT,
                reward_key(user_id, step),
                description=f"Onboarding reward: {step.value}",
            )
            onboarding.rewarded_for = [*onboarding.rewarded_for, step.value]
            changed = True
        if changed:
            onboarding.updated_at = utcnow()
            # filter().update(), never save(): see record_run (SQLite binds this
            # one-to-one row's UUID key raw, and every second run answered INTERNAL).
            await (
                UserOnboarding.filter(user_id=user_id)
                .using_db(conn)
                .update(
                    completed_steps=onboarding.completed_steps,
                    rewarded_for=onboarding.rewarded_for,
                    updated_at=onboarding.updated_at,
                )
            )
    return onboarding


async def reset_onboarding(user_id: uuid.UUID) -> UserOnboarding:
    """Back to the start; rewards already granted stay granted (and are not granted again)."""
    await get_onboarding(user_id)
    await UserOnboarding.filter(user_id=user_id).update(
        completed_steps=[],
        usage_reason=None,
        integrations=[],
        other_integrations=None,
        selected_store_listing_version_id=None,
        agent_input=None,
        onboarding_agent_execution_id=None,
        agent_runs=0,
        run_graph_ids=[],
        updated_at=utcnow(),
    )
    return await get_onboarding(user_id)


RUNS_FOR_RUN_AGENTS = 10


async def record_run(
    settings: Settings, user_id: uuid.UUID, graph_id: uuid.UUID, source: GraphSource | None
) -> None:
    """The onboarding side effects of starting a run (SEMANTICS.md §4)."""
    await get_onboarding(user_id)
    async with in_transaction() as conn:
        row = await UserOnboarding.select_for_update().using_db(conn).get(user_id=user_id)
        rerun = str(graph_id) in row.run_graph_ids
        if not rerun:
            row.run_graph_ids = [*row.run_graph_ids, str(graph_id)]
        row.agent_runs += 1
        row.updated_at = utcnow()
        # filter().update() rather than save(): on SQLite, save() binds the UUID
        # primary key of this one-to-one row raw and fails.
        await (
            UserOnboarding.filter(user_id=user_id)
            .using_db(conn)
            .update(
                run_graph_ids=row.run_graph_ids,
                agent_runs=row.agent_runs,
                updated_at=row.updated_at,
            )
        )
    steps = []
    if source == GraphSource.LIBRARY:
        steps.append(OnboardingStep.MARKETPLACE_RUN_AGENT)
    elif source == GraphSource.BUILDER:
        steps.append(OnboardingStep.BUILDER_RUN_AGENT)
    if rerun:
        steps.append(OnboardingStep.RE_RUN_AGENT)
    if row.agent_runs >= RUNS_FOR_RUN_AGENTS:
        steps.append(OnboardingStep.RUN_AGENTS)
    for step in steps:
        if step.value not in row.completed_steps or step.value not in row.rewarded_for:
            await complete_step(settings, user_id, step)
