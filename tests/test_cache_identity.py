"""What a mutation changes comes back with an identity a client cache keys by
(issue 11), so Apollo and urql update the object already on screen."""

from __future__ import annotations

from tests.execution_helpers import execute, wait_for_end
from tests.graph_builders import create_graph


async def test_per_user_singletons_carry_the_users_id(gql, user):
    me = await gql.ok(
        "{ me { id notificationPreferences { id } } onboarding { id } autoTopUp { id } }",
        token=user.token,
    )
    assert me["me"]["notificationPreferences"]["id"] == me["me"]["id"] == str(user.id)
    assert me["onboarding"]["id"] == me["autoTopUp"]["id"] == str(user.id)

    changed = await gql.ok(
        """mutation { updateNotificationPreferences(input: {dailyLimit: 4}) { id dailyLimit }
                      updateOnboarding(input: {usageReason: "x"}) { id usageReason } }""",
        token=user.token,
    )
    assert changed["updateNotificationPreferences"] == {"id": str(user.id), "dailyLimit": 4}
    assert changed["updateOnboarding"] == {"id": str(user.id), "usageReason": "x"}
    again = await gql.ok("{ me { notificationPreferences { id dailyLimit } } }", token=user.token)
    assert again["me"]["notificationPreferences"] == {"id": str(user.id), "dailyLimit": 4}


async def test_graph_settings_are_the_graphs_across_versions(gql, user):
    graph = await create_graph(gql, user)
    updated = await gql.ok(
        """mutation($id: ID!) { updateGraphSettings(id: $id,
             settings: {humanInTheLoopSafeMode: false}) { id humanInTheLoopSafeMode } }""",
        {"id": graph["id"].upper()},
        token=user.token,
    )
    assert updated["updateGraphSettings"] == {"id": graph["id"], "humanInTheLoopSafeMode": False}
    shown = await gql.ok(
        "query($id: ID!) { graph(id: $id) { settings { id humanInTheLoopSafeMode } } }",
        {"id": graph["id"]},
        token=user.token,
    )
    assert shown["graph"]["settings"] == updated["updateGraphSettings"]


async def test_share_link_carries_the_execution_it_changed(gql, user, worker):
    graph = await create_graph(gql, user)
    started = await execute(gql, user, graph["id"], {"text": "share"})
    await wait_for_end(gql, user, started["id"])
    shared = await gql.ok(
        """mutation($id: ID!) { shareExecution(id: $id) {
             shareToken execution { id isShared shareToken } } }""",
        {"id": started["id"]},
        token=user.token,
    )
    link = shared["shareExecution"]
    assert link["execution"] == {
        "id": started["id"],
        "isShared": True,
        "shareToken": link["shareToken"],
    }
