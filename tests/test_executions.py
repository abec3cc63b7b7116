"""Running graphs on a real worker (SEMANTICS.md §7)."""

from __future__ import annotations

import uuid

from app.models import CreditTransaction, Execution, NodeExecution
from tests.execution_helpers import EXECUTE, GET_EXECUTION, execute, wait_for_end
from tests.graph_builders import create_graph, link, node


async def test_echo_graph_runs_to_completion(gql, user, worker):
    graph = await create_graph(gql, user)
    started = await execute(gql, user, graph["id"], {"text": "hello"})
    assert started["status"] == "QUEUED"
    assert started["graphVersion"] == 1 and started["inputs"] == {"text": "hello"}
    done = await wait_for_end(gql, user, started["id"])
    assert done["status"] == "COMPLETED", done
    assert done["outputs"] == {"result": ["hello"]}
    assert done["startedAt"] and done["endedAt"]
    assert len(done["nodeExecutions"]) == 3
    assert {n["status"] for n in done["nodeExecutions"]} == {"COMPLETED"}
    stats = done["stats"]
    assert stats["nodeCount"] == 3 and stats["nodeErrorCount"] == 0 and stats["cost"] == 0
    assert stats["activitySummary"] is None and stats["correctnessScore"] is None


async def test_for_each_fans_out_one_run_per_item(gql, user, worker):
    graph = await create_graph(
        gql,
        user,
        {
            "name": "fan-out",
            "nodes": [
                node("in", "AgentInput", name="items", type="array"),
                node("each", "ForEach"),
                node("out", "AgentOutput", name="item"),
            ],
            "links": [link("in", "result", "each", "items"), link("each", "item", "out", "value")],
        },
    )
    started = await execute(gql, user, graph["id"], {"items": [1, 2, 3, 4]})
    done = await wait_for_end(gql, user, started["id"])
    assert done["status"] == "COMPLETED", done
    assert sorted(done["outputs"]["item"]) == [1, 2, 3, 4]
    outputs = [n for n in done["nodeExecutions"] if n["inputData"].get("name") == "item"]
    assert len(outputs) == 4


async def test_static_link_value_is_reused_by_every_run(gql, user, worker):
    # A static prefix joined with each item: the prefix arrives once and stays.
    graph = await create_graph(
        gql,
        user,
        {
            "name": "static",
            "nodes": [
                node("items", "AgentInput", name="items", type="array"),
                node("prefix", "AgentInput", name="prefix", type="string"),
                node("keep", "StoreValue"),
                node("each", "ForEach"),
                node("join", "CreateList"),
                node("out", "AgentOutput", name="pairs"),
            ],
            "links": [
                link("items", "result", "each", "items"),
                link("prefix", "result", "keep", "input"),
                link("keep", "output", "join", "values", static=True),
                link("each", "item", "out", "value"),
            ],
        },
    )
    started = await execute(gql, user, graph["id"], {"items": ["a", "b"], "prefix": "p"})
    done = await wait_for_end(gql, user, started["id"])
    assert done["status"] == "COMPLETED", done


async def test_failing_node_fails_the_execution_but_the_rest_drain(gql, user, worker):
    graph = await create_graph(
        gql,
        user,
        {
            "name": "fails",
            "nodes": [
                node("calc", "Calculator", operation="divide", a=1, b=0),
                node("ok", "StoreValue", data="fine"),
                node("out", "AgentOutput", name="ok"),
            ],
            "links": [link("ok", "output", "out", "value")],
        },
    )
    started = await execute(gql, user, graph["id"])
    done = await wait_for_end(gql, user, started["id"])
    assert done["status"] == "FAILED"
    assert done["outputs"] == {"ok": ["fine"]}
    failed = [n for n in done["nodeExecutions"] if n["status"] == "FAILED"]
    assert len(failed) == 1 and "zero" in failed[0]["error"].lower()
    assert done["stats"]["nodeErrorCount"] == 1
    assert done["stats"]["error"] == failed[0]["error"]


async def test_bad_run_requests_change_nothing(gql, user, new_user):
    graph = await create_graph(gql, user)
    others = await create_graph(gql, new_user())
    before = await Execution.filter(user_id=user.id).count()
    cases = [
        ({"id": others["id"], "inputs": {"text": "x"}}, "NOT_FOUND"),
        ({"id": str(uuid.uuid4()), "inputs": {}}, "NOT_FOUND"),
        ({"id": graph["id"], "inputs": {"text": "x"}, "v": 9}, "NOT_FOUND"),
        ({"id": graph["id"], "inputs": {}}, "GRAPH_VALIDATION_FAILED"),
        ({"id": graph["id"], "inputs": {"text": 5}}, "GRAPH_VALIDATION_FAILED"),
        ({"id": graph["id"], "inputs": {"text": "x", "extra": 1}}, "GRAPH_VALIDATION_FAILED"),
        ({"id": graph["id"], "inputs": [1]}, "BAD_USER_INPUT"),
    ]
    for variables, code in cases:
        error = await gql.error(EXECUTE, variables, token=user.token)
        assert error["extensions"]["code"] == code, (variables, error)
    error = await gql.error(EXECUTE, {"id": graph["id"], "inputs": {}}, token=user.token)
    assert "required" in str(error["extensions"]["nodeErrors"])
    assert await Execution.filter(user_id=user.id).count() == before


async def test_execution_of_another_user_is_null(gql, user, new_user, worker):
    other = new_user()
    graph = await create_graph(gql, other)
    started = await execute(gql, other, graph["id"], {"text": "x"})
    assert (await gql.ok(GET_EXECUTION, {"id": started["id"]}, token=user.token))[
        "execution"
    ] is None
    for mutation in (
        "stopExecution(id: $id) { id }",
        "deleteExecution(id: $id)",
        "shareExecution(id: $id) { shareToken }",
        "unshareExecution(id: $id) { id }",
    ):
        error = await gql.error(
            f"mutation($id: ID!) {{ {mutation} }}", {"id": started["id"]}, token=user.token
        )
        assert error["extensions"] == {"code": "NOT_FOUND"}, mutation
    await wait_for_end(gql, other, started["id"])


async def test_paid_blocks_are_charged_once_per_node_run(gql, user, worker):
    graph = await create_graph(
        gql,
        user,
        {
            "name": "wait",
            "nodes": [node("w", "Wait", input="x", seconds=1), node("o", "AgentOutput", name="o")],
            "links": [link("w", "output", "o", "value")],
        },
    )
    before = (await gql.ok("{ me { credits } }", token=user.token))["me"]["credits"]
    started = await execute(gql, user, graph["id"])
    done = await wait_for_end(gql, user, started["id"])
    assert done["status"] == "COMPLETED"
    assert done["stats"]["cost"] == 1
    after = (await gql.ok("{ me { credits } }", token=user.token))["me"]["credits"]
    assert after == before - 1
    usage = await CreditTransaction.filter(user_id=user.id, type="USAGE")
    assert len(usage) == 1 and usage[0].usage_execution_id == uuid.UUID(started["id"])
    rows = await NodeExecution.filter(execution_id=started["id"])
    assert {r.cost for r in rows} == {0, 1}
