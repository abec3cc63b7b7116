"""Every id-taking field that issue 16 added, given another user's id, answers exactly
as it does for an id that does not exist (SEMANTICS.md §3), and changes nothing."""

from __future__ import annotations

import uuid

from app.models import LibraryAgent, Preset, StoredCredentials, Trigger
from tests.agent_helpers import (
    ADD,
    CREATE_PRESET,
    DELETE_CREDENTIALS,
    DELETE_PRESET,
    EXECUTE,
    LIBRARY,
    PRESETS,
    RATE,
    REMOVE,
    ROTATE,
    SET_ENABLED,
    UPDATE_LIBRARY,
    UPDATE_PRESET,
    create_credentials,
    publish,
    trigger_graph,
)
from tests.graph_builders import create_graph, echo_graph, link, node
from tests.test_triggers import armed_trigger

SCHEDULE = "mutation($input: ScheduleInput!) { createSchedule(input: $input) { id } }"
GRAPH_PARTS = """query($id: ID!) { graph(id: $id) { id trigger { id }
  triggerDeliveries { totalCount } } }"""


def fetch_graph() -> dict:
    return {
        "name": "fetcher",
        "nodes": [
            node("get", "HttpRequest", url="https://example.com/"),
            node("out", "AgentOutput", name="status"),
        ],
        "links": [link("get", "status_code", "out", "value")],
    }


async def answer(gql, user, document: str, variables: dict) -> dict:
    """What a client sees, without the parts that name the request (path, locations)."""
    body = await gql.execute(document, variables, token=user.token)
    for error in body.get("errors", []):
        error.pop("locations", None)
        error.pop("path", None)
    return body


async def test_another_users_ids_look_exactly_like_absent_ones(gql, new_user):
    maker, other = new_user(), new_user()
    # The maker's things: a trigger graph with a preset (and the preset's trigger),
    # credentials, their library entry, and one listed graph.
    graph, trigger, _ = await armed_trigger(gql, maker, trigger_graph())
    preset = (
        await gql.ok(
            CREATE_PRESET,
            {"input": {"graphId": graph["id"], "name": "makers", "inputs": {}}},
            token=maker.token,
        )
    )["createPreset"]
    credentials = await create_credentials(gql, maker, provider="example", kind="BEARER")
    entry = (await gql.ok(LIBRARY, token=maker.token))["libraryAgents"]["edges"][0]["node"]
    listed = await create_graph(gql, maker, echo_graph("listed"))
    publish(listed["id"])
    # The other user's own graphs to aim the maker's ids from.
    own = await create_graph(gql, other, echo_graph("mine"))
    fetcher = await create_graph(gql, other, fetch_graph())
    absent = str(uuid.uuid4())
    secrets_before = {t.id: t.encrypted_secret for t in await Trigger.filter(user_id=maker.id)}

    def schedule(graph_id: str, **extra) -> dict:
        return {"input": {"graphId": graph_id, "name": "s", "cron": "0 9 * * 1", **extra}}

    # (document, variables with the maker's id, the same with an absent id)
    cases = [
        (GRAPH_PARTS, {"id": graph["id"]}, {"id": absent}),
        (PRESETS, {"g": graph["id"]}, {"g": absent}),
        (ADD, {"id": entry["id"]}, {"id": absent}),
        (ADD, {"id": graph["id"]}, {"id": absent}),
        (UPDATE_LIBRARY, {"id": entry["id"], "fav": True}, {"id": absent, "fav": True}),
        (UPDATE_LIBRARY, {"id": entry["id"], "v": 1}, {"id": absent, "v": 1}),
        (REMOVE, {"id": entry["id"]}, {"id": absent}),
        (RATE, {"id": entry["id"], "s": 4}, {"id": absent, "s": 4}),
        (
            CREATE_PRESET,
            {"input": {"graphId": graph["id"], "name": "x"}},
            {"input": {"graphId": absent, "name": "x"}},
        ),
        (
            UPDATE_PRESET,
            {"id": preset["id"], "input": {"name": "stolen"}},
            {"id": absent, "input": {"name": "stolen"}},
        ),
        (DELETE_PRESET, {"id": preset["id"]}, {"id": absent}),
        (
            EXECUTE,
            {"id": own["id"], "inputs": {"text": "x"}, "preset": preset["id"]},
            {"id": own["id"], "inputs": {"text": "x"}, "preset": absent},
        ),
        (
            EXECUTE,
            {"id": graph["id"], "preset": preset["id"]},
            {"id": absent, "preset": absent},
        ),
        (
            SCHEDULE,
            schedule(own["id"], presetId=preset["id"], inputs={"text": "x"}),
            schedule(own["id"], presetId=absent, inputs={"text": "x"}),
        ),
        (DELETE_CREDENTIALS, {"id": credentials["id"]}, {"id": absent}),
        (
            EXECUTE,
            {"id": fetcher["id"], "creds": {"http_credentials": credentials["id"]}},
            {"id": fetcher["id"], "creds": {"http_credentials": absent}},
        ),
        (
            CREATE_PRESET,
            {
                "input": {
                    "graphId": fetcher["id"],
                    "name": "x",
                    "credentialsInputs": {"http_credentials": credentials["id"]},
                }
            },
            {
                "input": {
                    "graphId": fetcher["id"],
                    "name": "x",
                    "credentialsInputs": {"http_credentials": absent},
                }
            },
        ),
        (
            SCHEDULE,
            schedule(fetcher["id"], credentials={"http_credentials": credentials["id"]}),
            schedule(fetcher["id"], credentials={"http_credentials": absent}),
        ),
        (ROTATE, {"id": trigger["id"]}, {"id": absent}),
        (ROTATE, {"id": preset["trigger"]["id"]}, {"id": absent}),
        (SET_ENABLED, {"id": trigger["id"], "on": False}, {"id": absent, "on": False}),
    ]
    for document, theirs, missing in cases:
        seen = await answer(gql, other, document, theirs)
        expected = await answer(gql, other, document, missing)
        assert seen == expected, (document, seen, expected)
        assert seen.get("errors") or seen["data"] in (
            {"graph": None},
            {"presets": []},
        ), (document, seen)

    # Nothing of the maker's changed.
    assert (await Preset.get(id=preset["id"])).name == "makers"
    assert await StoredCredentials.filter(id=credentials["id"]).exists()
    assert (await Trigger.get(id=trigger["id"])).is_enabled is True
    secrets_after = {t.id: t.encrypted_secret for t in await Trigger.filter(user_id=maker.id)}
    assert secrets_after == secrets_before and len(secrets_before) == 2
    kept = await LibraryAgent.get(id=entry["id"])
    assert kept.is_favorite is False and str(kept.user_id) == str(maker.id)  # type: ignore[attr-defined]
