"""Faults that fuzzing (tests/test_fuzz.py, and probes around what it found)
turned up, each pinned by a focused test. All used to answer INTERNAL or 500,
or to change data silently; now each is a clear client error that changes
nothing.

- NUL characters (U+0000) in any text: PostgreSQL cannot store them (first
  seen in updateOnboarding's otherIntegrations).
- JSON numbers beyond 64 bits or infinite, JSON values nested deeper than the
  encoder goes: orjson refuses them when the value is stored, or writes null.
- Integer literals of more than 4300 digits, in the document or in the JSON
  body: Python refuses to read them.
- JSON bodies nested too deeply for Python's reader.
- The JsonParse block passed on values it could not send on: 300 levels of
  nesting broke executeBlock's response (HTTP 500).
"""

from __future__ import annotations

import json

import pytest

from tests.graph_builders import block_id, create_graph, echo_graph

NUL = "a\x00b"

ONBOARDING = "{ onboarding { usageReason otherIntegrations integrations agentInput updatedAt } }"
GRAPHS = "{ graphs { totalCount edges { node { id name version } } } }"
API_KEYS = "{ apiKeys { id name } }"
SCHEDULES = "{ schedules { id name inputs } }"
EXECUTIONS = "{ executions { totalCount } }"
SET_AGENT_INPUT = "mutation($i: OnboardingInput!) { updateOnboarding(input: $i) { agentInput } }"


def _nested(levels: int) -> list:
    value: list = []
    for _ in range(levels - 1):
        value = [value]
    return value


def _graph_with(node: int, **fields) -> dict:
    graph = echo_graph()
    graph["nodes"][node].update(fields)
    return graph


@pytest.mark.parametrize(
    ("literal", "problem"),
    [
        pytest.param('otherIntegrations: "x\\u0000y"', "NUL characters", id="nul"),
        pytest.param("agentInput: {n: 18446744073709551616}", "64 bits", id="int-beyond-64-bits"),
        pytest.param("agentInput: {n: 1e999}", "finite", id="infinite-float"),
        pytest.param("agentInput: {n: " + "9" * 5000 + "}", "64 bits", id="5000-digits"),
    ],
)
async def test_an_unstorable_literal_is_refused_and_changes_nothing(gql, user, literal, problem):
    before = await gql.ok(ONBOARDING, token=user.token)
    document = f"mutation {{ updateOnboarding(input: {{{literal}}}) {{ usageReason }} }}"
    error = await gql.error(document, token=user.token)
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert problem in error["message"]
    assert error["locations"]  # points at the literal
    assert await gql.ok(ONBOARDING, token=user.token) == before


async def test_a_huge_integer_argument_is_refused(gql, user):
    error = await gql.error("{ graphs(first: %s) { totalCount } }" % ("9" * 5000), token=user.token)
    assert error["extensions"]["code"] == "BAD_USER_INPUT"


@pytest.mark.parametrize(
    ("mutation", "variables", "observe", "message"),
    [
        pytest.param(
            SET_AGENT_INPUT,
            {"i": {"usageReason": "fine", "integrations": ["ok", NUL]}},
            ONBOARDING,
            "Text must not contain NUL characters (U+0000): $i.integrations.1",
            id="nul-in-a-list",
        ),
        pytest.param(
            SET_AGENT_INPUT,
            {"i": {"agentInput": {"text": NUL}}},
            ONBOARDING,
            "Text must not contain NUL characters (U+0000): $i.agentInput.text",
            id="nul-in-json",
        ),
        pytest.param(
            SET_AGENT_INPUT,
            {"i": {"agentInput": {"n": 2**70}}},
            ONBOARDING,
            "Numbers must be finite and fit in 64 bits: $i.agentInput.n",
            id="int-beyond-64-bits",
        ),
        pytest.param(
            SET_AGENT_INPUT,
            {"i": {"agentInput": {"deep": _nested(300)}}},
            ONBOARDING,
            "Values must not nest deeper than 100 levels: $i.agentInput.deep" + ".0" * 98,
            id="nested-300-levels",
        ),
        pytest.param(
            "mutation($g: GraphInput!) { createGraph(graph: $g) { id } }",
            {"g": {**echo_graph(), "name": NUL}},
            GRAPHS,
            "Text must not contain NUL characters (U+0000): $g.name",
            id="nul-in-graph-name",
        ),
        pytest.param(
            "mutation($g: GraphInput!) { createGraph(graph: $g) { id } }",
            {"g": _graph_with(0, inputDefault={"name": "text", "description": NUL})},
            GRAPHS,
            "Text must not contain NUL characters (U+0000): $g.nodes.0.inputDefault.description",
            id="nul-in-node-input",
        ),
        pytest.param(
            "mutation($g: GraphInput!) { createGraph(graph: $g) { id } }",
            {"g": _graph_with(1, metadata={NUL: 1})},
            GRAPHS,
            "Text must not contain NUL characters (U+0000): $g.nodes.1.metadata (a key)",
            id="nul-in-a-json-key",
        ),
        pytest.param(
            "mutation($g: GraphInput!) { createGraph(graph: $g) { id } }",
            {"g": _graph_with(1, metadata={"position": {"x": -(2**64)}})},
            GRAPHS,
            "Numbers must be finite and fit in 64 bits: $g.nodes.1.metadata.position.x",
            id="int-beyond-64-bits-in-metadata",
        ),
        pytest.param(
            "mutation($k: ApiKeyInput!) { createApiKey(input: $k) { apiKey { id } } }",
            {"k": {"name": "key", "description": NUL, "permissions": ["READ_GRAPH"]}},
            API_KEYS,
            "Text must not contain NUL characters (U+0000): $k.description",
            id="nul-in-api-key",
        ),
    ],
)
async def test_unstorable_variables_are_refused_and_change_nothing(
    gql, user, mutation, variables, observe, message
):
    before = await gql.ok(observe, token=user.token)
    error = await gql.error(mutation, variables, token=user.token)
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["message"] == message
    assert await gql.ok(observe, token=user.token) == before


async def test_unstorable_values_change_no_graph_run_schedule_or_refund(gql, user):
    graph = await create_graph(gql, user)
    observed = (GRAPHS, SCHEDULES, EXECUTIONS, "{ refundRequests { id } }")
    before = [await gql.ok(q, token=user.token) for q in observed]
    schedule = {"graphId": graph["id"], "name": "n", "cron": "0 3 * * *", "inputs": {"text": "hi"}}
    attempts = [
        (
            "mutation($id: ID!, $g: GraphInput!) { updateGraph(id: $id, graph: $g) { id } }",
            {"id": graph["id"], "g": {**echo_graph(), "description": NUL}},
        ),
        (
            "mutation($id: ID!, $i: JSON!) { executeGraph(graphId: $id, inputs: $i) { id } }",
            {"id": graph["id"], "i": {"text": NUL}},
        ),
        (
            "mutation($id: ID!, $i: JSON!) { executeGraph(graphId: $id, inputs: $i) { id } }",
            {"id": graph["id"], "i": {"text": "hi", "extra": 2**64}},
        ),
        (
            "mutation($s: ScheduleInput!) { createSchedule(input: $s) { id } }",
            {"s": {**schedule, "name": NUL}},
        ),
        (
            "mutation($s: ScheduleInput!) { createSchedule(input: $s) { id } }",
            {"s": {**schedule, "inputs": {"text": "hi", "deep": _nested(150)}}},
        ),
        (
            "mutation($k: ID!, $r: String!) { refundTopUp(transactionKey: $k, reason: $r) { id } }",
            {"k": "some-key", "r": NUL},
        ),
    ]
    for mutation, variables in attempts:
        assert await gql.error_code(mutation, variables, token=user.token) == "BAD_USER_INPUT"
    assert [await gql.ok(q, token=user.token) for q in observed] == before


@pytest.mark.parametrize(
    "number", [pytest.param("NaN", id="nan"), pytest.param("Infinity", id="infinity")]
)
async def test_non_finite_numbers_in_the_json_body_are_refused(gql, user, number):
    # Not JSON by the standard, but Python's reader takes them.
    before = await gql.ok(ONBOARDING, token=user.token)
    body = json.dumps({"query": SET_AGENT_INPUT, "variables": {"i": {"agentInput": {"n": 0}}}})
    response = await gql.http.post(
        "/graphql",
        content=body.replace('"n": 0', f'"n": {number}'),
        headers={"Authorization": f"Bearer {user.token}", "Content-Type": "application/json"},
    )
    error = response.json()["errors"][0]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["message"] == "Numbers must be finite and fit in 64 bits: $i.agentInput.n"
    assert await gql.ok(ONBOARDING, token=user.token) == before


@pytest.mark.parametrize(
    "variables",
    [
        pytest.param('{"n": ' + "9" * 5000 + "}", id="5000-digit-number"),
        pytest.param('{"n": ' + "[" * 100_000 + "]" * 100_000 + "}", id="nested-100000-levels"),
    ],
)
async def test_json_bodies_python_cannot_read_get_400(gql, user, variables):
    body = '{"query": "{ me { id } }", "variables": ' + variables + "}"
    response = await gql.http.post(
        "/graphql",
        content=body,
        headers={"Authorization": f"Bearer {user.token}", "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert "Traceback" not in response.text
    await gql.ok("{ me { id } }", token=user.token)  # the server is fine


async def test_ordinary_text_numbers_and_nesting_still_save(gql, user):
    # Only U+0000 is refused: other control characters and non-ASCII text pass,
    # as do 64-bit numbers and nesting within the limit (counted from the variable).
    agent_input = {"text": "tab\there, é, 囧, \u0001", "big": 2**63 - 1, "deep": _nested(90)}
    data = await gql.ok(SET_AGENT_INPUT, {"i": {"agentInput": agent_input}}, token=user.token)
    assert data["updateOnboarding"]["agentInput"] == agent_input


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        pytest.param("[" * 300 + "]" * 300, "nest deeper than 100 levels", id="nested-300-levels"),
        pytest.param('{"a": "x\\u0000y"}', "NUL characters", id="nul"),
    ],
)
async def test_json_parse_refuses_json_it_could_not_pass_on(gql, user, worker, text, problem):
    # A 300-level value used to break the response encoder (HTTP 500); text with
    # U+0000 could not be stored as a node's output.
    data = await gql.ok(
        "mutation($b: ID!, $i: JSON!) { executeBlock(blockId: $b, input: $i) { outputs } }",
        {"b": block_id("JsonParse"), "i": {"text": text}},
        token=user.token,
    )
    outputs = data["executeBlock"]["outputs"]
    assert "result" not in outputs
    assert problem in outputs["error"][0]
