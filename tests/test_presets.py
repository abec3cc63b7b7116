"""Presets: saved inputs and credentials, runs with overrides, schedules on a preset,
and presets that no longer fit their graph."""

from __future__ import annotations

import uuid

from app.models import Execution, GraphSource, Preset, Schedule
from tests.agent_helpers import (
    CREATE_PRESET,
    DELETE_PRESET,
    EXECUTE,
    PRESETS,
    UPDATE_PRESET,
    create_credentials,
    execute,
)
from tests.execution_helpers import wait_for_end
from tests.graph_builders import UPDATE, create_graph, echo_graph, link, node, node_ids
from tests.test_schedules import create_schedule, make_due, wait_until


async def create_preset(gql, user, graph_id: str, **fields) -> dict:
    variables = {"input": {"graphId": graph_id, "name": "saved", **fields}}
    return (await gql.ok(CREATE_PRESET, variables, token=user.token))["createPreset"]


async def test_a_preset_runs_with_its_inputs_and_given_inputs_override(gql, user, worker):
    graph = await create_graph(gql, user)
    preset = await create_preset(
        gql, user, graph["id"], description="the usual", inputs={"text": "from the preset"}
    )
    assert preset["graphVersion"] == 1 and preset["trigger"] is None
    assert preset["credentialsInputs"] == {}
    listed = (await gql.ok(PRESETS, {"g": graph["id"]}, token=user.token))["presets"]
    assert [p["id"] for p in listed] == [preset["id"]]

    run = await execute(gql, user, graph["id"], preset=preset["id"])
    assert run["inputs"] == {"text": "from the preset"}
    done = await wait_for_end(gql, user, run["id"])
    assert done["outputs"] == {"result": ["from the preset"]}

    override = await execute(gql, user, graph["id"], preset=preset["id"], inputs={"text": "mine"})
    assert override["inputs"] == {"text": "mine"}
    assert (await wait_for_end(gql, user, override["id"]))["outputs"] == {"result": ["mine"]}


async def test_a_preset_must_be_a_complete_valid_run(gql, user):
    graph = await create_graph(gql, user)
    in_node = node_ids(echo_graph(), graph)["in"]
    for inputs, node_errors in (
        ({}, {in_node: {"value": "input 'text' is required"}}),
        ({"text": 5}, {in_node: {"value": "input 'text' must be of type string"}}),
    ):
        error = await gql.error(
            CREATE_PRESET,
            {"input": {"graphId": graph["id"], "name": "p", "inputs": inputs}},
            token=user.token,
        )
        assert error["extensions"]["code"] == "GRAPH_VALIDATION_FAILED"
        assert error["extensions"]["nodeErrors"] == node_errors
    error = await gql.error(
        CREATE_PRESET,
        {"input": {"graphId": graph["id"], "name": "p", "inputs": {"text": "a", "oops": 1}}},
        token=user.token,
    )
    assert error["message"] == "Unknown input(s): oops"
    for bad in ({"name": " "}, {"name": "x" * 201}, {"inputs": [1]}, {"credentialsInputs": "x"}):
        variables = {"input": {"graphId": graph["id"], "name": "p", "inputs": {"text": "a"}, **bad}}
        assert await gql.error_code(CREATE_PRESET, variables, token=user.token) == (
            "BAD_USER_INPUT"
        )
    missing = {"input": {"graphId": str(uuid.uuid4()), "name": "p"}}
    assert await gql.error_code(CREATE_PRESET, missing, token=user.token) == "NOT_FOUND"
    assert not await Preset.filter(user_id=user.id).exists()


async def test_a_preset_whose_graph_changed_fails_validation_until_updated(gql, user, worker):
    graph = await create_graph(gql, user)
    preset = await create_preset(gql, user, graph["id"], inputs={"text": "hi"})
    # Version 2 asks for a differently named input: the preset follows and no longer fits.
    changed = echo_graph()
    changed["nodes"][0]["inputDefault"]["name"] = "message"
    v2 = (await gql.ok(UPDATE, {"id": graph["id"], "g": changed}, token=user.token))["updateGraph"]
    [moved] = (await gql.ok(PRESETS, {"g": graph["id"]}, token=user.token))["presets"]
    assert moved["graphVersion"] == 2
    error = await gql.error(EXECUTE, {"id": graph["id"], "preset": preset["id"]}, token=user.token)
    assert error["extensions"]["code"] == "GRAPH_VALIDATION_FAILED"
    new_input = node_ids(changed, v2)["in"]
    assert error["extensions"]["nodeErrors"] == {
        new_input: {"value": "input 'message' is required"}
    }
    # The old version still runs with it when asked for.
    old = await execute(gql, user, graph["id"], preset=preset["id"], v=1)
    assert (await wait_for_end(gql, user, old["id"]))["outputs"] == {"result": ["hi"]}
    # An update that does not fit is refused and changes nothing; one that fits works.
    code = await gql.error_code(
        UPDATE_PRESET, {"id": preset["id"], "input": {"name": "renamed"}}, token=user.token
    )
    assert code == "GRAPH_VALIDATION_FAILED"
    assert (await Preset.get(id=preset["id"])).name == "saved"
    fixed = (
        await gql.ok(
            UPDATE_PRESET,
            {"id": preset["id"], "input": {"inputs": {"message": "again"}, "name": "renamed"}},
            token=user.token,
        )
    )["updatePreset"]
    assert fixed["inputs"] == {"message": "again"} and fixed["name"] == "renamed"
    run = await execute(gql, user, graph["id"], preset=preset["id"])
    assert (await wait_for_end(gql, user, run["id"]))["outputs"] == {"result": ["again"]}


async def test_a_preset_keeps_credentials_and_checks_them(gql, user):
    spec = {
        "name": "fetcher",
        "nodes": [
            node("in", "AgentInput", name="url", type="string"),
            node("get", "HttpRequest"),
            node("out", "AgentOutput", name="status"),
        ],
        "links": [link("in", "result", "get", "url"), link("get", "status_code", "out", "value")],
    }
    graph = await create_graph(gql, user, spec)
    get_node = node_ids(spec, graph)["get"]
    token = await create_credentials(gql, user, provider="example", kind="BEARER")
    api_key = await create_credentials(gql, user, provider="example", kind="API_KEY")
    preset = await create_preset(
        gql,
        user,
        graph["id"],
        inputs={"url": "https://example.com/"},
        credentialsInputs={"http_credentials": token["id"]},
    )
    assert preset["credentialsInputs"] == {"http_credentials": token["id"]}
    error = await gql.error(
        UPDATE_PRESET,
        {"id": preset["id"], "input": {"credentialsInputs": {"http_credentials": api_key["id"]}}},
        token=user.token,
    )
    assert error["extensions"]["nodeErrors"] == {
        get_node: {"http_credentials": "needs credentials of type BEARER or BASIC"}
    }
    error = await gql.error(
        UPDATE_PRESET,
        {"id": preset["id"], "input": {"credentialsInputs": {"llm_credentials": token["id"]}}},
        token=user.token,
    )
    assert error["message"] == "Unknown credentials input(s): llm_credentials"


async def test_a_schedule_on_a_preset_fires_with_the_presets_inputs(gql, user, worker):
    graph = await create_graph(gql, user)
    preset = await create_preset(gql, user, graph["id"], inputs={"text": "scheduled preset"})
    schedule = await create_schedule(gql, user, graph["id"], presetId=preset["id"], inputs={})
    assert schedule["inputs"] == {}
    [row] = await Schedule.filter(id=schedule["id"])
    assert str(row.preset_id) == preset["id"]
    await make_due([schedule["id"]])

    async def fired():
        return await Execution.filter(
            user_id=user.id, graph_id=graph["id"], source=GraphSource.SCHEDULE
        ).first()

    execution = await wait_until(fired, what="the preset's schedule to fire")
    assert execution.inputs == {"text": "scheduled preset"}
    done = await wait_for_end(gql, user, str(execution.id))
    assert done["outputs"] == {"result": ["scheduled preset"]}


async def test_schedules_check_the_preset_and_go_with_it(gql, user, new_user):
    graph = await create_graph(gql, user)
    other_graph = await create_graph(gql, user)
    preset = await create_preset(gql, user, graph["id"], inputs={"text": "x"})
    # A preset of another graph is a mistake; a stranger's preset is not found.
    error = await gql.error(
        "mutation($input: ScheduleInput!) { createSchedule(input: $input) { id } }",
        {
            "input": {
                "graphId": other_graph["id"],
                "name": "s",
                "cron": "0 9 * * 1",
                "presetId": preset["id"],
            }
        },
        token=user.token,
    )
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    stranger = new_user()
    theirs = await create_graph(gql, stranger)
    code = await gql.error_code(
        "mutation($input: ScheduleInput!) { createSchedule(input: $input) { id } }",
        {
            "input": {
                "graphId": theirs["id"],
                "name": "s",
                "cron": "0 9 * * 1",
                "presetId": preset["id"],
            }
        },
        token=stranger.token,
    )
    assert code == "NOT_FOUND"
    schedule = await create_schedule(gql, user, graph["id"], presetId=preset["id"], inputs={})
    deleted = (await gql.ok(DELETE_PRESET, {"id": preset["id"]}, token=user.token))["deletePreset"]
    assert deleted == preset["id"]
    assert not await Schedule.filter(id=schedule["id"]).exists()
    assert await gql.error_code(DELETE_PRESET, {"id": preset["id"]}, token=user.token) == (
        "NOT_FOUND"
    )
    code = await gql.error_code(
        EXECUTE, {"id": graph["id"], "preset": preset["id"]}, token=user.token
    )
    assert code == "NOT_FOUND"


async def test_a_preset_of_another_graph_is_bad_input_and_changes_nothing(gql, user):
    graph, other = await create_graph(gql, user), await create_graph(gql, user)
    preset = await create_preset(gql, user, graph["id"], inputs={"text": "x"})
    error = await gql.error(EXECUTE, {"id": other["id"], "preset": preset["id"]}, token=user.token)
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert not await Execution.filter(user_id=user.id).exists()


async def test_presets_are_listed_newest_first_and_deleting_the_graph_deletes_them(gql, user):
    graph = await create_graph(gql, user)
    first = await create_preset(gql, user, graph["id"], inputs={"text": "1"})
    second = await create_preset(gql, user, graph["id"], inputs={"text": "2"})
    everything = (await gql.ok(PRESETS, token=user.token))["presets"]
    assert [p["id"] for p in everything] == [second["id"], first["id"]]
    for bad in ("nonsense", str(uuid.uuid4())):
        assert (await gql.ok(PRESETS, {"g": bad}, token=user.token))["presets"] == []
    await gql.ok(
        "mutation($id: ID!) { deleteGraph(id: $id) }", {"id": graph["id"]}, token=user.token
    )
    assert (await gql.ok(PRESETS, token=user.token))["presets"] == []
