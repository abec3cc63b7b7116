"""Onboarding: steps, rewards exactly once, reset, status and flags (SEMANTICS.md §4)."""

from __future__ import annotations

import asyncio

from app.models import CreditTransaction, UserOnboarding
from app.services.feature_flags import set_override

ONBOARDING = """{ onboarding { completedSteps rewardedFor usageReason integrations
  otherIntegrations selectedStoreListingVersionId agentInput onboardingAgentExecutionId
  agentRuns updatedAt } }"""
COMPLETE = """mutation($s: OnboardingStep!) {
  completeOnboardingStep(step: $s) { completedSteps rewardedFor } }"""
UPDATE = """mutation($i: OnboardingInput!) {
  updateOnboarding(input: $i) { usageReason integrations otherIntegrations
    selectedStoreListingVersionId agentInput onboardingAgentExecutionId updatedAt } }"""


async def _credits(gql, user) -> int:
    return (await gql.ok("{ me { credits } }", token=user.token))["me"]["credits"]


async def test_new_user_starts_with_empty_onboarding(gql, user):
    onboarding = (await gql.ok(ONBOARDING, token=user.token))["onboarding"]
    assert onboarding["completedSteps"] == []
    assert onboarding["rewardedFor"] == []
    assert onboarding["integrations"] == []
    assert onboarding["agentRuns"] == 0


async def test_completing_a_step_is_idempotent_and_rewards_once(gql, user, settings):
    start = await _credits(gql, user)
    reward = settings.ONBOARDING_REWARDS["WELCOME"]
    for _ in range(3):
        data = await gql.ok(COMPLETE, {"s": "WELCOME"}, token=user.token)
        assert data["completeOnboardingStep"]["completedSteps"] == ["WELCOME"]
        assert data["completeOnboardingStep"]["rewardedFor"] == ["WELCOME"]
    assert await _credits(gql, user) == start + reward


async def test_concurrent_completions_reward_once(gql, user, settings):
    start = await _credits(gql, user)
    await asyncio.gather(
        *(gql.ok(COMPLETE, {"s": "AGENT_NEW_RUN"}, token=user.token) for _ in range(10))
    )
    assert await _credits(gql, user) == start + settings.ONBOARDING_REWARDS["AGENT_NEW_RUN"]
    rewards = CreditTransaction.filter(user_id=user.id, key__contains="AGENT_NEW_RUN")
    assert await rewards.count() == 1


CLIENT_STEPS = [
    "WELCOME",
    "USAGE_REASON",
    "INTEGRATIONS",
    "AGENT_CHOICE",
    "AGENT_NEW_RUN",
    "AGENT_INPUT",
    "CONGRATS",
    "MARKETPLACE_VISIT",
    "BUILDER_OPEN",
]
SERVER_STEPS = [
    "GET_RESULTS",
    "MARKETPLACE_ADD_AGENT",
    "MARKETPLACE_RUN_AGENT",
    "BUILDER_SAVE_AGENT",
    "BUILDER_RUN_AGENT",
    "SCHEDULE_AGENT",
    "RE_RUN_AGENT",
    "RUN_AGENTS",
]


async def test_steps_the_server_completes_cannot_be_claimed_by_hand(gql, user):
    """Issue 13: a client used to claim every reward (~1,000 credits) by hand."""
    start = await _credits(gql, user)
    for step in SERVER_STEPS:
        error = await gql.error(COMPLETE, {"s": step}, token=user.token)
        assert error["extensions"]["code"] == "BAD_USER_INPUT", step
        assert "completed by the server" in error["message"]
    onboarding = (await gql.ok(ONBOARDING, token=user.token))["onboarding"]
    assert onboarding["completedSteps"] == [] and onboarding["rewardedFor"] == []
    assert await _credits(gql, user) == start
    assert await CreditTransaction.filter(user_id=user.id, key__contains="onboarding").count() == 0


async def test_every_client_step_can_be_completed(gql, user):
    for step in CLIENT_STEPS:
        await gql.ok(COMPLETE, {"s": step}, token=user.token)
    onboarding = (await gql.ok(ONBOARDING, token=user.token))["onboarding"]
    assert onboarding["completedSteps"] == CLIENT_STEPS


async def test_saving_a_store_agent_into_the_library_completes_marketplace_add(gql, user, settings):
    from tests.graph_builders import echo_graph

    start = await _credits(gql, user)
    await gql.ok(
        "mutation($g: GraphInput!) { createGraph(graph: $g, source: LIBRARY) { id } }",
        {"g": echo_graph("from the store")},
        token=user.token,
    )
    onboarding = (await gql.ok(ONBOARDING, token=user.token))["onboarding"]
    assert onboarding["completedSteps"] == ["MARKETPLACE_ADD_AGENT"]
    reward = settings.ONBOARDING_REWARDS["MARKETPLACE_ADD_AGENT"]
    assert await _credits(gql, user) == start + reward


async def test_step_without_reward_grants_nothing(gql, user):
    start = await _credits(gql, user)
    data = await gql.ok(COMPLETE, {"s": "USAGE_REASON"}, token=user.token)
    assert data["completeOnboardingStep"]["completedSteps"] == ["USAGE_REASON"]
    assert data["completeOnboardingStep"]["rewardedFor"] == []
    assert await _credits(gql, user) == start


async def test_reset_keeps_rewards_and_never_grants_them_again(gql, user, settings):
    await gql.ok(COMPLETE, {"s": "MARKETPLACE_VISIT"}, token=user.token)
    await gql.ok(
        UPDATE, {"i": {"usageReason": "work", "integrations": ["github"]}}, token=user.token
    )
    after_reward = await _credits(gql, user)
    reset = (
        await gql.ok(
            "mutation { resetOnboarding { completedSteps rewardedFor usageReason integrations } }",
            token=user.token,
        )
    )["resetOnboarding"]
    assert reset == {
        "completedSteps": [],
        "rewardedFor": ["MARKETPLACE_VISIT"],
        "usageReason": None,
        "integrations": [],
    }
    data = await gql.ok(COMPLETE, {"s": "MARKETPLACE_VISIT"}, token=user.token)
    assert data["completeOnboardingStep"]["completedSteps"] == ["MARKETPLACE_VISIT"]
    assert await _credits(gql, user) == after_reward


async def test_update_onboarding_sets_only_given_fields(gql, user):
    execution_id = "7f1a3c52-3a55-4ec4-9d0e-6a9f4c8f0b11"
    data = (
        await gql.ok(
            UPDATE,
            {
                "i": {
                    "usageReason": "automate reports",
                    "integrations": ["github", "slack", "github"],
                    "agentInput": {"topic": "cats"},
                    "onboardingAgentExecutionId": execution_id,
                }
            },
            token=user.token,
        )
    )["updateOnboarding"]
    assert data["usageReason"] == "automate reports"
    assert data["integrations"] == ["github", "slack"]
    assert data["agentInput"] == {"topic": "cats"}
    assert data["onboardingAgentExecutionId"] == execution_id
    assert data["updatedAt"] is not None
    data = (await gql.ok(UPDATE, {"i": {"otherIntegrations": "notion"}}, token=user.token))[
        "updateOnboarding"
    ]
    assert data["usageReason"] == "automate reports"
    assert data["otherIntegrations"] == "notion"


async def test_bad_onboarding_input_changes_nothing(gql, user):
    await gql.ok(UPDATE, {"i": {"usageReason": "before"}}, token=user.token)
    before = await UserOnboarding.get(user_id=user.id)
    bad_inputs = [
        {"usageReason": "changed", "selectedStoreListingVersionId": "not-a-uuid"},
        {"usageReason": "changed", "onboardingAgentExecutionId": "42"},
        {"usageReason": "x" * 501},
        {"usageReason": "changed", "agentInput": [1, 2, 3]},
        {"usageReason": "changed", "integrations": [f"i{n}" for n in range(51)]},
    ]
    for payload in bad_inputs:
        assert await gql.error_code(UPDATE, {"i": payload}, token=user.token) == (
            "BAD_USER_INPUT"
        ), payload
    after = await UserOnboarding.get(user_id=user.id)
    assert after.usage_reason == "before"
    assert after.updated_at == before.updated_at


async def test_unknown_step_is_bad_input(gql, user):
    assert await gql.error_code(COMPLETE, {"s": "FLY_TO_MOON"}, token=user.token) == (
        "BAD_USER_INPUT"
    )
    assert (await UserOnboarding.get(user_id=user.id)).completed_steps == []


STATUS = "{ onboardingStatus { isOnboardingEnabled isChatEnabled } }"


async def test_onboarding_status_follows_chat_flag_override(gql, user):
    status = (await gql.ok(STATUS, token=user.token))["onboardingStatus"]
    assert status == {"isOnboardingEnabled": True, "isChatEnabled": False}
    await set_override(user.id, "CHAT", True)
    status = (await gql.ok(STATUS, token=user.token))["onboardingStatus"]
    assert status == {"isOnboardingEnabled": False, "isChatEnabled": True}
    await set_override(user.id, "CHAT", None)
    status = (await gql.ok(STATUS, token=user.token))["onboardingStatus"]
    assert status == {"isOnboardingEnabled": True, "isChatEnabled": False}
