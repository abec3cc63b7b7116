"""Graphs: versions, validation with node errors, library settings, listing (§6)."""

from __future__ import annotations

import base64
import json
import uuid

from app.models import Graph, LibraryAgent, Link, Node, Schedule
from tests.graph_builders import (
    CREATE,
    GET,
    UPDATE,
    block_id,
    create_graph,
    echo_graph,
    link,
    node,
)

VALIDATE = """mutation($g: GraphInput!) {
  validateGraph(graph: $g) { valid message nodeErrors { nodeId errors } } }"""


async def _counts(user_id) -> tuple[int, int, int, int]:
    rows = await Graph.filter(user_id=user_id).values_list("id", flat=True)
    return (
        len(rows),
        await Node.filter(graph_id__in=rows).count() if rows else 0,
        await Link.filter(graph_id__in=rows).count() if rows else 0,
        await LibraryAgent.filter(user_id=user_id).count(),
    )


async def test_create_gives_new_ids_version_one_and_a_library_entry(gql, user):
    graph = await create_graph(gql, user, source="BUILDER")
    uuid.UUID(graph["id"])
    assert graph["version"] == 1 and graph["isActive"] is True
    assert graph["name"] == "echo"
    ids = {n["id"] for n in graph["nodes"]}
    assert not ids & {"in", "store", "out"}
    assert all(uuid.UUID(i) for i in ids)
    by_block = {n["block"]["name"]: n["id"] for n in graph["nodes"]}
    assert {(lk["sourceId"], lk["sinkId"]) for lk in graph["links"]} == {
        (by_block["AgentInput"], by_block["StoreValue"]),
        (by_block["StoreValue"], by_block["AgentOutput"]),
    }
    # StoreValue's output is static, so its links are too.
    static = {lk["sourceId"]: lk["isStatic"] for lk in graph["links"]}
    assert static[by_block["StoreValue"]] is True and static[by_block["AgentInput"]] is False
    assert graph["settings"] == {"humanInTheLoopSafeMode": False}
    onboarding = await gql.ok("{ onboarding { completedSteps } }", token=user.token)
    assert "BUILDER_SAVE_AGENT" in onboarding["onboarding"]["completedSteps"]


async def test_input_and_output_schemas_come_from_the_io_nodes(gql, user):
    graph_input = echo_graph()
    graph_input["nodes"].append(node("in2", "AgentInput", name="times", value=3, type="integer"))
    graph = await create_graph(gql, user, graph_input)
    assert graph["inputSchema"] == {
        "type": "object",
        "properties": {
            "text": {"title": "text", "type": "string", "description": "what to echo"},
            "times": {"title": "times", "type": "integer", "default": 3},
        },
        "required": ["text"],
    }
    assert graph["outputSchema"] == {
        "type": "object",
        "properties": {"result": {"title": "result"}},
    }
    assert graph["credentialsInputSchema"] == {"type": "object", "properties": {}, "required": []}


async def test_update_saves_a_new_active_version(gql, user):
    graph = await create_graph(gql, user)
    changed = echo_graph("echo v2")
    updated = (
        await gql.ok(
            UPDATE, {"id": graph["id"], "g": {**changed, "id": graph["id"]}}, token=user.token
        )
    )["updateGraph"]
    assert updated["id"] == graph["id"] and updated["version"] == 2 and updated["isActive"]
    old = (await gql.ok(GET, {"id": graph["id"], "v": 1}, token=user.token))["graph"]
    assert old["isActive"] is False and old["name"] == "echo"
    active = (await gql.ok(GET, {"id": graph["id"]}, token=user.token))["graph"]
    assert active["version"] == 2 and active["name"] == "echo v2"
    assert not {n["id"] for n in old["nodes"]} & {n["id"] for n in active["nodes"]}
    versions = await gql.ok(
        "query($id: ID!) { graphVersions(id: $id) { version isActive } }",
        {"id": graph["id"]},
        token=user.token,
    )
    assert versions["graphVersions"] == [
        {"version": 2, "isActive": True},
        {"version": 1, "isActive": False},
    ]


async def test_update_with_another_id_in_the_body_changes_nothing(gql, user):
    graph = await create_graph(gql, user)
    before = await _counts(user.id)
    body = {**echo_graph("x"), "id": str(uuid.uuid4())}
    code = await gql.error_code(UPDATE, {"id": graph["id"], "g": body}, token=user.token)
    assert code == "BAD_USER_INPUT"
    assert await _counts(user.id) == before


async def test_other_users_graph_is_indistinguishable_from_absent(gql, user, new_user):
    theirs = await create_graph(gql, new_user())
    absent = str(uuid.uuid4())
    for graph_id in (theirs["id"], absent, "nope"):
        assert (await gql.ok(GET, {"id": graph_id}, token=user.token))["graph"] is None
        versions = await gql.ok(
            "query($id: ID!) { graphVersions(id: $id) { id } }", {"id": graph_id}, token=user.token
        )
        assert versions["graphVersions"] == []
        for query, variables in (
            (UPDATE, {"id": graph_id, "g": echo_graph()}),
            ("mutation($id: ID!) { deleteGraph(id: $id) }", {"id": graph_id}),
            (
                "mutation($id: ID!) { setActiveGraphVersion(id: $id, version: 1) { id } }",
                {"id": graph_id},
            ),
            (
                "mutation($id: ID!) { updateGraphSettings(id: $id, settings: "
                "{humanInTheLoopSafeMode: false}) { humanInTheLoopSafeMode } }",
                {"id": graph_id},
            ),
        ):
            error = await gql.error(query, variables, token=user.token)
            assert error["extensions"] == {"code": "NOT_FOUND"}, (query, graph_id)
            assert error["message"].endswith("not found")
    assert await Graph.filter(graph_id=theirs["id"]).count() == 1


async def test_validation_failures_name_client_node_ids_and_store_nothing(gql, user):
    before = await _counts(user.id)
    bad = {
        "name": "broken",
        "nodes": [
            node("in", "AgentInput", name="text"),
            {"id": "ghost", "blockId": str(uuid.uuid4()), "inputDefault": {}},
            node("calc", "Calculator", operation="modulo", a=1),
            node("out", "AgentOutput"),
            node("store", "StoreValue", nonsense=1),
        ],
        "links": [
            link("in", "no_such_output", "calc", "b"),
            link("in", "result", "store", "no_such_input"),
            link("in", "result", "missing-node", "value"),
        ],
    }
    error = await gql.error(CREATE, {"g": bad}, token=user.token)
    assert error["extensions"]["code"] == "GRAPH_VALIDATION_FAILED"
    errors = error["extensions"]["nodeErrors"]
    assert "unknown block" in errors["ghost"]["blockId"]
    assert "no output pin" in errors["calc"]["b"]
    assert "modulo" in errors["calc"]["operation"] or errors["calc"]["operation"]
    assert "required" in errors["out"]["name"]
    assert "no input pin" in errors["store"]["nonsense"]
    assert "no input pin" in errors["store"]["no_such_input"]
    assert "unknown node" in errors["in"]["result"]
    assert await _counts(user.id) == before
    validation = (await gql.ok(VALIDATE, {"g": bad}, token=user.token))["validateGraph"]
    assert validation["valid"] is False and validation["message"]
    assert {e["nodeId"] for e in validation["nodeErrors"]} == set(errors)
    assert await _counts(user.id) == before


async def test_duplicate_node_ids_and_non_object_defaults_are_refused(gql, user):
    bad = {
        "name": "dup",
        "nodes": [
            node("a", "StoreValue"),
            node("a", "StoreValue"),
            {"id": "b", "blockId": block_id("StoreValue"), "inputDefault": [1, 2]},
        ],
        "links": [],
    }
    error = await gql.error(CREATE, {"g": bad}, token=user.token)
    assert error["extensions"]["nodeErrors"]["a"] == {"id": "node id used more than once"}
    assert error["extensions"]["nodeErrors"]["b"] == {"inputDefault": "must be an object"}


async def test_empty_name_is_refused(gql, user):
    error = await gql.error(CREATE, {"g": {**echo_graph(), "name": "  "}}, token=user.token)
    assert error["extensions"]["code"] == "GRAPH_VALIDATION_FAILED"
    assert "name" in error["message"]


async def test_validate_graph_accepts_a_good_graph_without_saving(gql, user):
    before = await _counts(user.id)
    validation = (await gql.ok(VALIDATE, {"g": echo_graph()}, token=user.token))["validateGraph"]
    assert validation == {"valid": True, "message": None, "nodeErrors": []}
    assert await _counts(user.id) == before


def _sub_graph_node(node_id: str, graph: dict, **inputs) -> dict:
    return node(
        node_id, "SubGraph", graph_id=graph["id"], graph_version=graph["version"], inputs=inputs
    )


async def test_sub_graph_outputs_are_pins_and_sub_graphs_are_listed(gql, user):
    child = await create_graph(gql, user)
    parent_input = {
        "name": "parent",
        "nodes": [_sub_graph_node("sub", child, text="hi"), node("out", "AgentOutput", name="o")],
        "links": [link("sub", "result", "out", "value")],
    }
    parent = await create_graph(gql, user, parent_input)
    data = await gql.ok(
        "query($id: ID!) { graph(id: $id) { subGraphs { id version } } }",
        {"id": parent["id"]},
        token=user.token,
    )
    assert data["graph"]["subGraphs"] == [{"id": child["id"], "version": 1}]
    bad = {**parent_input, "links": [link("sub", "not_an_output", "out", "value")]}
    error = await gql.error(CREATE, {"g": bad}, token=user.token)
    assert "no output pin" in error["extensions"]["nodeErrors"]["out"]["value"]


async def test_sub_graph_cycles_and_foreign_graphs_are_refused(gql, user, new_user):
    child = await create_graph(gql, user)
    parent = await create_graph(
        gql, user, {"name": "parent", "nodes": [_sub_graph_node("sub", child)], "links": []}
    )
    before = await _counts(user.id)
    # child v2 would run parent, which runs child: a cycle.
    cyclic = {"name": "child v2", "nodes": [_sub_graph_node("loop", parent)], "links": []}
    error = await gql.error(UPDATE, {"id": child["id"], "g": cyclic}, token=user.token)
    assert "cycle" in error["extensions"]["nodeErrors"]["loop"]["graph_id"]
    itself = {"name": "self", "nodes": [_sub_graph_node("me", parent)], "links": []}
    error = await gql.error(UPDATE, {"id": parent["id"], "g": itself}, token=user.token)
    assert "itself" in error["extensions"]["nodeErrors"]["me"]["graph_id"]
    foreign = await create_graph(gql, new_user())
    error = await gql.error(
        CREATE,
        {"g": {"name": "f", "nodes": [_sub_graph_node("f", foreign)], "links": []}},
        token=user.token,
    )
    assert "no graph" in error["extensions"]["nodeErrors"]["f"]["graph_id"]
    missing_version = {**child, "version": 9}
    error = await gql.error(
        CREATE,
        {"g": {"name": "v", "nodes": [_sub_graph_node("v", missing_version)], "links": []}},
        token=user.token,
    )
    assert "version 9" in error["extensions"]["nodeErrors"]["v"]["graph_id"]
    assert await _counts(user.id) == before


async def test_set_active_version(gql, user):
    graph = await create_graph(gql, user)
    await gql.ok(UPDATE, {"id": graph["id"], "g": echo_graph("v2")}, token=user.token)
    data = await gql.ok(
        "mutation($id: ID!) { setActiveGraphVersion(id: $id, version: 1) { version isActive } }",
        {"id": graph["id"]},
        token=user.token,
    )
    assert data["setActiveGraphVersion"] == {"version": 1, "isActive": True}
    assert (await gql.ok(GET, {"id": graph["id"]}, token=user.token))["graph"]["version"] == 1
    error = await gql.error(
        "mutation($id: ID!) { setActiveGraphVersion(id: $id, version: 7) { version } }",
        {"id": graph["id"]},
        token=user.token,
    )
    assert error["extensions"]["code"] == "NOT_FOUND"
    assert (await gql.ok(GET, {"id": graph["id"]}, token=user.token))["graph"]["version"] == 1


async def test_delete_removes_every_version_schedules_and_library_entry(gql, user):
    graph = await create_graph(gql, user)
    await gql.ok(UPDATE, {"id": graph["id"], "g": echo_graph("v2")}, token=user.token)
    await Schedule.create(
        user_id=user.id,
        graph_id=graph["id"],
        graph_version=2,
        name="s",
        cron="0 * * * *",
        timezone="UTC",
    )
    deleted = await gql.ok(
        "mutation($id: ID!) { deleteGraph(id: $id) }", {"id": graph["id"]}, token=user.token
    )
    assert deleted["deleteGraph"] == 2
    assert (await gql.ok(GET, {"id": graph["id"]}, token=user.token))["graph"] is None
    assert await Schedule.filter(graph_id=graph["id"]).count() == 0
    assert await LibraryAgent.filter(graph_id=graph["id"]).count() == 0


async def test_graph_settings(gql, user):
    graph = await create_graph(gql, user)
    data = await gql.ok(
        "mutation($id: ID!) { updateGraphSettings(id: $id, settings: "
        "{humanInTheLoopSafeMode: false}) { humanInTheLoopSafeMode } }",
        {"id": graph["id"]},
        token=user.token,
    )
    assert data["updateGraphSettings"] == {"humanInTheLoopSafeMode": False}
    got = (await gql.ok(GET, {"id": graph["id"]}, token=user.token))["graph"]
    assert got["settings"] == {"humanInTheLoopSafeMode": False}


async def test_for_export_strips_secrets(gql, user):
    graph_input = echo_graph()
    headers = {"Authorization": "Bearer sk-live-123", "X-Api-Key": "k", "Accept": "json"}
    graph_input["nodes"].append(
        node("http", "HttpRequest", url="https://example.com", headers=headers)
    )
    graph_input["nodes"][1]["inputDefault"] = {"data": {"password": "p", "kept": 1}}
    graph = await create_graph(gql, user, graph_input)
    exported = (await gql.ok(GET, {"id": graph["id"], "e": True}, token=user.token))["graph"]
    defaults = [n["inputDefault"] for n in exported["nodes"]]
    assert {"data": {"kept": 1}} in defaults
    http = next(d for d in defaults if "url" in d)
    assert http["headers"] == {"Accept": "json"}
    assert "sk-live" not in str(exported)
    normal = (await gql.ok(GET, {"id": graph["id"]}, token=user.token))["graph"]
    assert "sk-live-123" in str(normal)


LIST = """query($first: Int!, $after: String) { graphs(first: $first, after: $after) {
  totalCount pageInfo { hasNextPage endCursor } edges { cursor node { id name version } } } }"""


async def test_graphs_lists_active_versions_newest_first_with_cursors(gql, new_user):
    person = new_user()
    made = [await create_graph(gql, person, echo_graph(f"g{i}")) for i in range(5)]
    await gql.ok(UPDATE, {"id": made[0]["id"], "g": echo_graph("g0 v2")}, token=person.token)
    first = (await gql.ok(LIST, {"first": 2}, token=person.token))["graphs"]
    assert first["totalCount"] == 5
    assert [e["node"]["name"] for e in first["edges"]] == ["g0 v2", "g4"]
    assert first["pageInfo"]["hasNextPage"] is True
    names = [e["node"]["name"] for e in first["edges"]]
    after = first["pageInfo"]["endCursor"]
    while after:
        page = (await gql.ok(LIST, {"first": 2, "after": after}, token=person.token))["graphs"]
        names += [e["node"]["name"] for e in page["edges"]]
        after = page["pageInfo"]["endCursor"] if page["pageInfo"]["hasNextPage"] else None
    assert names == ["g0 v2", "g4", "g3", "g2", "g1"]


async def test_graphs_bad_paging_input(gql, user):
    for variables in ({"first": 0}, {"first": 101}, {"first": 5, "after": "garbage!"}):
        assert await gql.error_code(LIST, variables, token=user.token) == "BAD_USER_INPUT"
    # Well-formed cursors whose time cannot be brought to UTC (year 1 at +14:00,
    # year 9999 at -14:00): a clear error, not the database refusing the value.
    for cursor in hostile_time_cursors():
        variables = {"first": 5, "after": cursor}
        assert await gql.error_code(LIST, variables, token=user.token) == "BAD_USER_INPUT"


def hostile_time_cursors() -> list[str]:
    row_id = "00000000-0000-0000-0000-000000000000"
    times = ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00")
    return [base64.urlsafe_b64encode(json.dumps([at, row_id]).encode()).decode() for at in times]


async def test_api_key_scopes_for_graphs(gql, user):
    await create_graph(gql, user)
    created = await gql.ok(
        'mutation { createApiKey(input: {name: "r", permissions: [READ_GRAPH]}) { plainTextKey } }',
        token=user.token,
    )
    reader = created["createApiKey"]["plainTextKey"]
    data = await gql.ok("{ graphs { totalCount } }", api_key=reader)
    assert data["graphs"]["totalCount"] >= 1
    assert await gql.error_code(CREATE, {"g": echo_graph()}, api_key=reader) == "FORBIDDEN"
    created = await gql.ok(
        'mutation { createApiKey(input: {name: "b", permissions: [READ_BLOCK]}) { plainTextKey } }',
        token=user.token,
    )
    assert (
        await gql.error_code(
            "{ graphs { totalCount } }", api_key=created["createApiKey"]["plainTextKey"]
        )
        == "FORBIDDEN"
    )
