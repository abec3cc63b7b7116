"""Stops always end (SEMANTICS.md §7, issue 12): whatever a run is doing when it
is stopped, its connections go back to the pool, every node whose status changes
gets its event, and a run of any size ends TERMINATED."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from tortoise import connections

from app.events import EventReader
from app.models import Execution, NodeExecution
from app.services import ledger
from app.services.execution_family import family_of
from tests.conftest import TEST_ENV
from tests.execution_helpers import (
    OwnStack,
    execute,
    granted_user,
    stack_with_worker,
    wait_for_end,
    wait_for_status,
)
from tests.graph_builders import create_graph, link, node, node_ids

STOP = "mutation($id: ID!) { stopExecution(id: $id) { id status } }"


@pytest.fixture(scope="module")
async def stack(database) -> AsyncIterator[OwnStack]:
    async with stack_with_worker(TEST_ENV, "stops") as own:
        yield own


async def rich_user(stack: OwnStack, new_user, credits: int = 100_000):
    return await granted_user(stack, new_user, credits)


async def idle_in_transaction() -> int:
    _, rows = await connections.get("default").execute_query(
        "SELECT count(*) AS n FROM pg_stat_activity "
        "WHERE datname = current_database() AND state LIKE 'idle in transaction%'"
    )
    return rows[0]["n"]


async def test_twenty_stops_of_busy_runs_leave_no_connection_in_a_transaction(stack, new_user):
    """Stopping cancels node tasks wherever they are, also inside a transaction
    (a charge, a completion): each must roll back or commit and give its
    connection back. They used to stay "idle in transaction" until the pool was
    exhausted and the worker ran nothing."""
    person = await rich_user(stack, new_user)
    spec = {
        "name": "busy",
        "nodes": [
            node("in", "AgentInput", name="items", type="array"),
            node("each", "ForEach"),
            node("keep", "StoreValue"),
            node("wait", "Wait", seconds=0.05),
            node("out", "AgentOutput", name="o"),
        ],
        "links": [
            link("in", "result", "each", "items"),
            link("each", "item", "wait", "input"),
            link("wait", "output", "keep", "input"),
            link("keep", "output", "out", "value"),
        ],
    }
    graph = await create_graph(stack.gql, person, spec)
    wait_node = node_ids(spec, graph)["wait"]
    stopped = []
    for round_ in range(20):
        run = await execute(stack.gql, person, graph["id"], {"items": list(range(300))})
        # Stop it while it is busy: some Waits done (charged), more running.
        deadline = asyncio.get_running_loop().time() + 30
        while True:
            done_waits = await NodeExecution.filter(
                execution_id=run["id"], node_id=wait_node, status="COMPLETED"
            ).count()
            if done_waits >= 3 + round_ % 7:
                break
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.02)
        answer = (await stack.gql.ok(STOP, {"id": run["id"]}, token=person.token))["stopExecution"]
        stopped.append(answer["id"])
    for execution_id in stopped:
        done = await wait_for_end(stack.gql, person, execution_id, timeout=30)
        assert done["status"] == "TERMINATED", done
        assert not [n for n in done["nodeExecutions"] if n["status"] in ("QUEUED", "RUNNING")]
    deadline = asyncio.get_running_loop().time() + 15
    while (left := await idle_in_transaction()) != 0:
        assert asyncio.get_running_loop().time() < deadline, f"{left} idle in transaction"
        await asyncio.sleep(0.2)
    # The worker's pool is whole: it still runs what comes next.
    after = await execute(stack.gql, person, graph["id"], {"items": [1, 2]})
    done = await wait_for_end(stack.gql, person, after["id"], timeout=30)
    assert done["status"] == "COMPLETED" and sorted(done["outputs"]["o"]) == [1, 2]
    assert await ledger.get_available(person.id) == await ledger.get_balance(person.id)


async def test_a_run_with_forty_thousand_queued_nodes_stops(stack, new_user):
    """More unfinished node executions than asyncpg takes arguments (32,767): the
    stop used to fail on every retry and leave the run RUNNING."""
    person = await rich_user(stack, new_user)
    spec = {
        "name": "wide",
        "nodes": [
            node("in", "AgentInput", name="items", type="array"),
            node("each", "ForEach"),
            node("wait", "Wait", seconds=60),
        ],
        "links": [link("in", "result", "each", "items"), link("each", "item", "wait", "input")],
    }
    graph = await create_graph(stack.gql, person, spec)
    run = await execute(stack.gql, person, graph["id"], {"items": list(range(40_000))})
    deadline = asyncio.get_running_loop().time() + 120
    while await NodeExecution.filter(execution_id=run["id"], status="RUNNING").count() < 16:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.2)
    assert await NodeExecution.filter(execution_id=run["id"], status="QUEUED").count() > 39_000
    await stack.gql.ok(STOP, {"id": run["id"]}, token=person.token)
    # How fast it ends is bench/stop_latency.py's figure; here, that it does, and how.
    deadline = asyncio.get_running_loop().time() + 60
    while (await Execution.get(id=run["id"])).status != "TERMINATED":
        assert asyncio.get_running_loop().time() < deadline, "the stop never ended"
        await asyncio.sleep(0.1)
    rows = await NodeExecution.filter(execution_id=run["id"]).values_list("id", "status")
    terminated = {row_id for row_id, status in rows if status == "TERMINATED"}
    assert len(terminated) == 40_000
    # Every one of them was announced, before the run's own end.
    redis = stack.redis()
    try:
        events = await EventReader(redis, stack.extra_env["REDIS_PREFIX"]).after(
            uuid.UUID(run["id"]), 0
        )
    finally:
        await redis.aclose()
    announced = {
        uuid.UUID(e.data["nodeExecution"]["id"])
        for e in events
        if e.kind == "node" and e.data["nodeExecution"]["status"] == "TERMINATED"
    }
    assert announced == terminated
    assert events[-1].kind == "execution"
    assert events[-1].data["execution"]["status"] == "TERMINATED"
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    # The sixteen Waits that were running paid for their seconds; nothing is held.
    assert await ledger.get_available(person.id) == await ledger.get_balance(person.id)


async def test_an_infrastructure_error_inside_a_sub_graph_run_resumes_it(stack, user):
    """A database error inside a child run used to fail the parent's SubGraph node
    with the raw error and leave the child RUNNING for good. It is an error of the
    run, not of a block: the job retries and resumes parent and child."""
    marker = f"child-{uuid.uuid4().hex}"
    name = marker.replace("-", "_")
    db = connections.get("default")
    await db.execute_script(
        f"""
        CREATE SEQUENCE {name};
        CREATE FUNCTION {name}() RETURNS trigger AS $$
        BEGIN
          IF NEW.status = 'COMPLETED' AND NEW.output_data::text LIKE '%{marker}%' THEN
            IF nextval('{name}') = 1 THEN
              RAISE EXCEPTION 'injected failure inside the child';
            END IF;
          END IF;
          RETURN NEW;
        END $$ LANGUAGE plpgsql;
        CREATE TRIGGER {name} BEFORE UPDATE ON node_executions
          FOR EACH ROW EXECUTE FUNCTION {name}();
        """
    )
    child_spec = {
        "name": "child",
        "nodes": [node("keep", "StoreValue", data=marker), node("out", "AgentOutput", name="r")],
        "links": [link("keep", "output", "out", "value")],
    }
    try:
        child = await create_graph(stack.gql, user, child_spec)
        parent_spec = {
            "name": "parent",
            "nodes": [
                node("sub", "SubGraph", graph_id=child["id"], graph_version=1),
                node("out", "AgentOutput", name="final"),
            ],
            "links": [link("sub", "r", "out", "value")],
        }
        parent = await create_graph(stack.gql, user, parent_spec)
        run = await execute(stack.gql, user, parent["id"])
        done = await wait_for_end(stack.gql, user, run["id"], timeout=60)
    finally:
        await db.execute_script(
            f"DROP TRIGGER {name} ON node_executions; DROP FUNCTION {name}(); DROP SEQUENCE {name};"
        )
    assert "injected failure inside the child" in stack.worker_process.log()
    assert done["status"] == "COMPLETED", done
    assert done["outputs"] == {"final": [marker]}
    [child_run] = await Execution.filter(parent_execution_id=run["id"])
    assert child_run.status == "COMPLETED"
    view = await wait_for_status(stack.gql, user, str(child_run.id), {"COMPLETED"})
    assert sorted(n["status"] for n in view["nodeExecutions"]) == ["COMPLETED", "COMPLETED"]


async def test_a_family_of_sub_graph_runs_stops_at_once(stack, new_user):
    """Stopping a run stops every sub-graph run below it, in one go rather than run
    by run (which took 35-96 s for a few hundred): every run and node ends TERMINATED
    with its event, each child's end is announced before its parent's, the stopped
    Waits pay for their seconds and the root's cost counts them all."""
    person = await rich_user(stack, new_user)
    leaf = await create_graph(
        stack.gql, person, {"name": "leaf", "nodes": [node("w", "Wait", seconds=60)], "links": []}
    )

    def fan_out(name: str, child_id: str) -> dict:
        return {
            "name": name,
            "nodes": [
                node("each", "ForEach", items=[{"i": i} for i in range(5)]),
                node("sub", "SubGraph", graph_id=child_id, graph_version=1),
            ],
            "links": [link("each", "item", "sub", "inputs")],
        }

    middle = await create_graph(stack.gql, person, fan_out("middle", leaf["id"]))
    root = await create_graph(stack.gql, person, fan_out("root", middle["id"]))
    run = await execute(stack.gql, person, root["id"])
    wait_block = (await stack.gql.ok("{ blocks { id name } }", token=person.token))["blocks"]
    wait_id = next(b["id"] for b in wait_block if b["name"] == "Wait")
    deadline = asyncio.get_running_loop().time() + 120
    while True:
        family = await family_of(uuid.UUID(run["id"]))
        ids = [m.id for m in family]
        waits = await NodeExecution.filter(
            execution_id__in=ids, block_id=wait_id, status="RUNNING"
        ).count()
        if len(family) == 1 + 5 + 25 and waits == 25:
            break
        assert asyncio.get_running_loop().time() < deadline, (len(family), waits)
        await asyncio.sleep(0.1)
    stopped = await stack.gql.ok(STOP, {"id": run["id"]}, token=person.token)
    assert stopped["stopExecution"]["status"] == "TERMINATED"

    executions = {e.id: e for e in await Execution.filter(id__in=ids)}
    assert {e.status for e in executions.values()} == {"TERMINATED"}
    assert all(e.ended_at and e.error == "Stopped" for e in executions.values())
    rows = await NodeExecution.filter(execution_id__in=ids).values(
        "id", "execution_id", "status", "cost", "block_id"
    )
    # Only the six ForEach nodes had finished; everything else was stopped.
    assert sorted(r["status"] for r in rows if r["status"] != "TERMINATED") == ["COMPLETED"] * 6
    waits_paid = [r["cost"] for r in rows if str(r["block_id"]) == wait_id]
    assert len(waits_paid) == 25 and all(cost >= 1 for cost in waits_paid)
    # The root's cost is every node's of the family, and the ledger agrees.
    assert executions[ids[0]].stats["cost"] == sum(r["cost"] for r in rows) > 0
    assert await ledger.get_available(person.id) == await ledger.get_balance(person.id)

    redis = stack.redis()
    try:
        reader = EventReader(redis, stack.extra_env["REDIS_PREFIX"])
        streams = {m.id: await reader.after(m.id, 0) for m in family}
    finally:
        await redis.aclose()
    for member in family:
        events = streams[member.id]
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        assert events[-1].kind == "execution"
        assert events[-1].data["execution"]["status"] == "TERMINATED"
        # Its own nodes' ends and those of every run below it, before its own end.
        below = {m.id for m in family if member.id in (m.id, *m.ancestors)}
        ended = {
            uuid.UUID(e.data["nodeExecution"]["id"])
            for e in events
            if e.kind == "node" and e.data["nodeExecution"]["status"] == "TERMINATED"
        }
        stopped_below = {
            r["id"] for r in rows if r["execution_id"] in below and r["status"] == "TERMINATED"
        }
        assert ended == stopped_below
