"""estimateExecution: the cost of a run before running it, checked against what
real runs are charged."""

from __future__ import annotations

import math
import uuid
from collections.abc import AsyncIterator

import pytest

from tests.agent_helpers import LlmStack, llm_stack
from tests.execution_helpers import wait_for_end
from tests.graph_builders import create_graph, echo_graph, link, node, node_ids
from tests.test_api_keys import create_key

ME = "{ me { credits } }"
LINE = """nodeId blockId blockName graphId graphVersion depth fixedCredits perSecondCredits
  minCredits maxCredits mayRunMoreThanOnce note"""
ESTIMATE = f"""query($id: ID!, $v: Int, $inputs: JSON! = {{}}) {{
  estimateExecution(graphId: $id, version: $v, inputs: $inputs) {{
    graphId graphVersion nodes {{ {LINE} }} fixedCredits minCredits maxCredits
    history {{ runCount medianCredits p90Credits }} typicalCredits balance
    balanceAfterTypicalRun }} }}"""
EXECUTE = """mutation($id: ID!, $inputs: JSON! = {}) {
  executeGraph(graphId: $id, inputs: $inputs) { id } }"""


@pytest.fixture(scope="module")
async def stack(database) -> AsyncIterator[LlmStack]:
    """A worker whose HttpRequest may reach the local stand-in (1 credit a request)."""
    async with llm_stack("estimates") as running:
        yield running


async def estimate(gql, user, graph_id: str, **variables) -> dict:
    data = await gql.ok(ESTIMATE, {"id": graph_id, **variables}, token=user.token)
    return data["estimateExecution"]


async def credits(gql, user) -> int:
    return (await gql.ok(ME, token=user.token))["me"]["credits"]


async def run_to_end(gql, user, graph_id: str, inputs: dict | None = None) -> dict:
    started = await gql.ok(EXECUTE, {"id": graph_id, "inputs": inputs or {}}, token=user.token)
    done = await wait_for_end(gql, user, started["executeGraph"]["id"], timeout=60)
    assert done["status"] == "COMPLETED", done
    return done


def requests_graph(url: str) -> dict:
    """Three HttpRequests (1 credit each, whatever the URL; one URL is the run's
    input 'url', known only during the run) -> output."""
    return {
        "name": "requests",
        "nodes": [
            node("in", "AgentInput", name="url", type="string"),
            node("a", "HttpRequest", url=f"{url}?a=1"),
            node("b", "HttpRequest", url=f"{url}?b=1"),
            node("c", "HttpRequest"),
            node("out", "AgentOutput", name="status"),
        ],
        "links": [
            link("in", "result", "c", "url"),
            link("c", "status_code", "out", "value"),
        ],
    }


def wait_graph(seconds_linked: bool = False, seconds: float = 1) -> dict:
    nodes = [
        node("in", "AgentInput", name="seconds", type="number", value=seconds),
        node("wait", "Wait", **({} if seconds_linked else {"seconds": seconds})),
        node("out", "AgentOutput", name="result"),
    ]
    links = [link("in", "result", "wait", "input"), link("wait", "output", "out", "value")]
    if seconds_linked:
        links.append(link("in", "result", "wait", "seconds"))
    return {"name": "wait", "nodes": nodes, "links": links}


async def test_a_fixed_cost_graph_costs_exactly_its_estimate(stack, new_user):
    gql = stack.gql
    user = new_user()
    await gql.ok("{ me { id } }", token=user.token)
    url = stack.stand_in.echo_url
    spec = requests_graph(url)
    graph = await create_graph(gql, user, spec)
    ids = node_ids(spec, graph)
    guess = await estimate(gql, user, graph["id"], inputs={"url": url})
    assert guess["graphId"] == graph["id"] and guess["graphVersion"] == 1
    assert guess["fixedCredits"] == guess["minCredits"] == guess["maxCredits"] == 3
    lines = {line["nodeId"]: line for line in guess["nodes"]}
    assert set(lines) == set(ids.values())
    for name in ("a", "b", "c"):
        line = lines[ids[name]]
        assert line["blockName"] == "HttpRequest" and line["depth"] == 0
        assert line["fixedCredits"] == line["minCredits"] == line["maxCredits"] == 1
        assert line["perSecondCredits"] == 0 and line["mayRunMoreThanOnce"] is False
    assert lines[ids["in"]]["maxCredits"] == 0
    assert guess["history"] is None and guess["typicalCredits"] == 3
    balance = await credits(gql, user)
    assert guess["balance"] == balance and guess["balanceAfterTypicalRun"] == balance - 3

    done = await run_to_end(gql, user, graph["id"], {"url": url})
    assert done["stats"]["cost"] == 3
    assert balance - await credits(gql, user) == 3
    after = await estimate(gql, user, graph["id"], inputs={"url": url})
    assert after["history"] == {"runCount": 1, "medianCredits": 3, "p90Credits": 3}
    assert after["balanceAfterTypicalRun"] == balance - 3 - 3


async def test_a_wait_graph_costs_within_its_range(gql, user, worker):
    graph = await create_graph(gql, user, wait_graph(seconds=2))
    guess = await estimate(gql, user, graph["id"])
    wait = next(line for line in guess["nodes"] if line["blockName"] == "Wait")
    assert wait["perSecondCredits"] == 1 and wait["fixedCredits"] == 0
    assert wait["minCredits"] == 2 and wait["maxCredits"] == 4
    assert (guess["minCredits"], guess["maxCredits"]) == (2, 4)
    done = await run_to_end(gql, user, graph["id"])
    assert guess["minCredits"] <= done["stats"]["cost"] <= guess["maxCredits"]


async def test_history_median_and_p90_of_real_runs(gql, user, worker):
    """Runs costing 1, 1, 2, 3 credits (Waits of 0, 1, 2 and 3 seconds): the median
    and 90th percentile are costs real runs had (nearest rank)."""
    graph = await create_graph(gql, user, wait_graph(seconds_linked=True))
    guess = await estimate(gql, user, graph["id"], inputs={"seconds": 1})
    # The seconds arrive during the run: from one second to the most a Wait may take.
    assert guess["minCredits"] == 1 and guess["maxCredits"] == 3602
    costs = []
    for seconds in (0, 1, 2, 3):
        done = await run_to_end(gql, user, graph["id"], {"seconds": seconds})
        costs.append(done["stats"]["cost"])
    ordered = sorted(costs)
    assert ordered[0] >= 1 and ordered[-1] >= 3
    after = await estimate(gql, user, graph["id"], inputs={"seconds": 1})
    assert after["history"] == {
        "runCount": 4,
        "medianCredits": ordered[math.ceil(0.5 * 4) - 1],
        "p90Credits": ordered[math.ceil(0.9 * 4) - 1],
    }
    assert after["typicalCredits"] == after["history"]["medianCredits"]
    assert after["balanceAfterTypicalRun"] == after["balance"] - after["typicalCredits"]


async def test_sub_graph_nodes_are_estimated_with_their_depth(gql, user):
    child = await create_graph(gql, user, wait_graph(seconds=3))
    parent_spec = {
        "name": "parent",
        "nodes": [
            node("sub", "SubGraph", graph_id=child["id"], graph_version=1, inputs={}),
            node("wait", "Wait", seconds=1),
        ],
        "links": [],
    }
    parent = await create_graph(gql, user, parent_spec)
    guess = await estimate(gql, user, parent["id"])
    depths = {(line["blockName"], line["depth"], line["graphId"]) for line in guess["nodes"]}
    assert ("SubGraph", 0, parent["id"]) in depths
    assert ("Wait", 0, parent["id"]) in depths
    assert ("Wait", 1, child["id"]) in depths
    assert guess["minCredits"] == 1 + 3 and guess["maxCredits"] == 3 + 5


async def test_loops_and_for_each_have_no_maximum(gql, user):
    spec = {
        "name": "each",
        "nodes": [
            node("each", "ForEach", items=[1, 2, 3]),
            node("wait", "Wait", seconds=1),
        ],
        "links": [link("each", "item", "wait", "input")],
    }
    graph = await create_graph(gql, user, spec)
    ids = node_ids(spec, graph)
    guess = await estimate(gql, user, graph["id"])
    lines = {line["nodeId"]: line for line in guess["nodes"]}
    assert lines[ids["wait"]]["mayRunMoreThanOnce"] is True
    assert lines[ids["each"]]["mayRunMoreThanOnce"] is False
    assert guess["maxCredits"] is None and guess["minCredits"] == 1


async def test_another_users_graph_is_not_found(gql, user, new_user):
    graph = await create_graph(gql, user)
    stranger = new_user()
    await gql.ok("{ me { id } }", token=stranger.token)
    for graph_id in (graph["id"], str(uuid.uuid4()), "not-a-uuid"):
        error = await gql.error(
            ESTIMATE, {"id": graph_id, "inputs": {"text": "x"}}, token=stranger.token
        )
        assert error["extensions"]["code"] == "NOT_FOUND"
    error = await gql.error(ESTIMATE, {"id": graph["id"], "v": 7}, token=user.token)
    assert error["extensions"]["code"] == "NOT_FOUND"


@pytest.mark.parametrize(
    ("inputs", "code"),
    [
        ([1, 2], "BAD_USER_INPUT"),
        ("text", "BAD_USER_INPUT"),
        ({}, "GRAPH_VALIDATION_FAILED"),
        ({"text": 5}, "GRAPH_VALIDATION_FAILED"),
    ],
)
async def test_bad_inputs_are_refused(gql, user, inputs, code):
    graph = await create_graph(gql, user, echo_graph())
    error = await gql.error(ESTIMATE, {"id": graph["id"], "inputs": inputs}, token=user.token)
    assert error["extensions"]["code"] == code


async def test_a_large_graph_is_estimated(gql, user):
    """300 nodes in a chain: one line each, in one answer."""
    count = 300
    spec = {
        "name": "long",
        "nodes": [node(f"n{i}", "StoreValue", input=0, data=i) for i in range(count)],
        "links": [link(f"n{i}", "output", f"n{i + 1}", "input") for i in range(count - 1)],
    }
    graph = await create_graph(gql, user, spec)
    guess = await estimate(gql, user, graph["id"])
    assert len(guess["nodes"]) == count
    assert guess["minCredits"] == guess["maxCredits"] == 0


async def test_api_keys_need_execute_graph(gql, user):
    graph = await create_graph(gql, user, echo_graph())
    reader = (await create_key(gql, user, ["READ_GRAPH"]))["plainTextKey"]
    variables = {"id": graph["id"], "inputs": {"text": "x"}}
    error = await gql.error(ESTIMATE, variables, api_key=reader)
    assert error["extensions"]["code"] == "FORBIDDEN"
    runner = (await create_key(gql, user, ["EXECUTE_GRAPH"]))["plainTextKey"]
    guess = (await gql.ok(ESTIMATE, variables, api_key=runner))["estimateExecution"]
    assert guess["minCredits"] == guess["maxCredits"] == 0


async def test_sub_graphs_past_the_depth_bound_leave_the_maximum_open(gql, user):
    """Seven graphs, each running the one before as a sub-graph: five levels are
    estimated, the rest is noted, and the total has no maximum."""
    graph = await create_graph(gql, user, wait_graph(seconds=1))
    for level in range(7):
        graph = await create_graph(
            gql,
            user,
            {
                "name": f"level {level}",
                "nodes": [
                    node("sub", "SubGraph", graph_id=graph["id"], graph_version=1, inputs={}),
                ],
                "links": [],
            },
        )
    guess = await estimate(gql, user, graph["id"])
    assert max(line["depth"] for line in guess["nodes"]) == 5
    assert guess["maxCredits"] is None
    assert any(line["note"] and "deeper" in line["note"] for line in guess["nodes"])


async def test_a_wide_tree_of_sub_graphs_stops_at_the_line_bound(gql, user):
    """A graph of 50 SubGraph nodes, each running a graph of 50 SubGraph nodes of a
    third: 2,500 lines and more, cut at 2,000 with no maximum."""
    leaf = await create_graph(gql, user, wait_graph(seconds=1))

    def fan(child: dict) -> dict:
        return {
            "name": "fan",
            "nodes": [
                node(f"s{i}", "SubGraph", graph_id=child["id"], graph_version=1, inputs={})
                for i in range(50)
            ],
            "links": [],
        }

    middle = await create_graph(gql, user, fan(leaf))
    top = await create_graph(gql, user, fan(middle))
    guess = await estimate(gql, user, top["id"])
    assert len(guess["nodes"]) == 2000
    assert guess["maxCredits"] is None
