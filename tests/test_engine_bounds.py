"""Runs that would never end, values that cannot be stored, credits that run out
(SEMANTICS.md §7, issue 12): a stack of its own with low run limits and private
HTTP allowed (a local server stands in for the web)."""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import uuid
from collections.abc import AsyncIterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from tortoise import connections

from app.events import EventReader
from app.models import CreditTransaction, CreditTransactionType, Execution, NodeExecution
from app.services import ledger
from tests.conftest import TEST_ENV
from tests.execution_helpers import (
    GET_EXECUTION,
    OwnStack,
    execute,
    stack_with_worker,
    wait_for_end,
)
from tests.graph_builders import UPDATE, create_graph, link, node, node_ids

MAX_NODE_RUNS = 50
MAX_DEPTH = 3
MAX_OUTPUT_CHARS = 1_000_000


@pytest.fixture(scope="module")
async def stack(database) -> AsyncIterator[OwnStack]:
    env = {
        **TEST_ENV,
        "MAX_NODE_RUNS_PER_EXECUTION": str(MAX_NODE_RUNS),
        "MAX_SUBGRAPH_DEPTH": str(MAX_DEPTH),
        "MAX_NODE_OUTPUT_CHARS": str(MAX_OUTPUT_CHARS),
        "ALLOW_PRIVATE_HTTP": "true",
        # Rewards for running agents would top balances up mid-test.
        "ONBOARDING_REWARDS": "{}",
    }
    async with stack_with_worker(env, "bounds") as own:
        yield own


async def stream_events(stack: OwnStack, execution_id: str) -> list:
    """Every event of the execution's stream, as subscribers read it."""
    redis = stack.redis()
    try:
        return await EventReader(redis, stack.extra_env["REDIS_PREFIX"]).after(
            uuid.UUID(execution_id), 0
        )
    finally:
        await redis.aclose()


async def test_a_loop_that_never_stops_ends_failed_at_the_node_run_limit(stack, user):
    """A Calculator feeding its own input used to loop for ever, for free."""
    spec = {
        "name": "counts for ever",
        "nodes": [
            node("start", "AgentInput", name="start", type="number"),
            node("count", "Calculator", operation="add", b=1),
        ],
        "links": [
            link("start", "result", "count", "a"),
            link("count", "result", "count", "a"),
        ],
    }
    graph = await create_graph(stack.gql, user, spec)
    started = await execute(stack.gql, user, graph["id"], {"start": 0})
    done = await wait_for_end(stack.gql, user, started["id"], timeout=60)
    assert done["status"] == "FAILED", done
    assert f"at most {MAX_NODE_RUNS} node runs" in done["stats"]["error"]
    rows = await NodeExecution.filter(execution_id=started["id"]).count()
    assert rows == MAX_NODE_RUNS
    # Loops are legal: it ran until the limit, each run adding one.
    results = [
        n["outputData"]["result"][0]
        for n in done["nodeExecutions"]
        if n["status"] == "COMPLETED"
        and "result" in n["outputData"]
        and n["nodeId"] == node_ids(spec, graph)["count"]
    ]
    assert sorted(results) == list(range(1, len(results) + 1))
    assert len(results) >= MAX_NODE_RUNS - 3
    assert not [n for n in done["nodeExecutions"] if n["status"] in ("QUEUED", "RUNNING")]


async def test_a_graph_that_runs_itself_through_a_linked_graph_id_ends_at_the_depth_limit(
    stack, user
):
    """Validation only sees defaults; a graph id arriving on a link is checked when
    it runs, so a graph running itself stops at MAX_SUBGRAPH_DEPTH."""
    gql = stack.gql
    leaf_spec = {
        "name": "leaf",
        "nodes": [
            node("in", "AgentInput", name="gid", type="string"),
            node("out", "AgentOutput", name="out"),
        ],
        "links": [link("in", "result", "out", "value")],
    }
    leaf = await create_graph(gql, user, leaf_spec)
    await gql.ok(UPDATE, {"id": leaf["id"], "g": leaf_spec}, token=user.token)  # version 2

    def looping(inputs: dict) -> dict:
        return {
            "name": "runs itself",
            "nodes": [
                node("in", "AgentInput", name="gid", type="string"),
                node("sub", "SubGraph", graph_id=leaf["id"], graph_version=2, inputs=inputs),
            ],
            "links": [link("in", "result", "sub", "graph_id")],
        }

    graph = await create_graph(gql, user, looping({}))
    await gql.ok(UPDATE, {"id": graph["id"], "g": looping({"gid": graph["id"]})}, token=user.token)
    started = await execute(gql, user, graph["id"], {"gid": graph["id"]}, v=2)
    done = await wait_for_end(gql, user, started["id"], timeout=60)
    assert done["status"] == "FAILED", done
    assert f"at most {MAX_DEPTH} levels deep" in done["stats"]["error"]
    family = [started["id"]]
    while True:
        children = await Execution.filter(parent_execution_id=family[-1]).values_list(
            "id", flat=True
        )
        if not children:
            break
        assert len(children) == 1
        family.append(str(children[0]))
    assert len(family) == MAX_DEPTH + 1  # the root and MAX_DEPTH levels below it
    statuses = await Execution.filter(id__in=family).values_list("status", flat=True)
    assert set(statuses) == {"FAILED"}
    assert not await NodeExecution.filter(
        execution_id__in=family, status__in=["QUEUED", "RUNNING"]
    ).exists()


async def test_agent_output_values_never_rewrite_the_execution_row(stack, user):
    """ForEach -> AgentOutput used to rewrite the whole outputs list per value
    (quadratic). A trigger counts every UPDATE of this execution's row."""
    items = list(range(MAX_NODE_RUNS - 5))
    spec = {
        "name": "many outputs",
        "nodes": [
            node("in", "AgentInput", name="items", type="array"),
            node("each", "ForEach"),
            node("out", "AgentOutput", name="item"),
        ],
        "links": [link("in", "result", "each", "items"), link("each", "item", "out", "value")],
    }
    graph = await create_graph(stack.gql, user, spec)
    db = connections.get("default")
    name = f"count_updates_{uuid.uuid4().hex[:8]}"
    await db.execute_script(
        f"""
        CREATE TABLE {name} (execution_id uuid);
        CREATE FUNCTION {name}() RETURNS trigger AS $$
        BEGIN INSERT INTO {name} VALUES (NEW.id); RETURN NEW; END $$ LANGUAGE plpgsql;
        CREATE TRIGGER {name} AFTER UPDATE ON executions FOR EACH ROW EXECUTE FUNCTION {name}();
        """
    )
    try:
        started = await execute(stack.gql, user, graph["id"], {"items": items})
        done = await wait_for_end(stack.gql, user, started["id"], timeout=60)
        _, rows = await db.execute_query(
            f"SELECT count(*) AS n FROM {name} WHERE execution_id = $1", [started["id"]]
        )
    finally:
        await db.execute_script(
            f"DROP TRIGGER {name} ON executions; DROP FUNCTION {name}(); DROP TABLE {name};"
        )
    assert done["status"] == "COMPLETED", done
    # In the order the (concurrent) AgentOutput runs completed.
    assert sorted(done["outputs"]["item"]) == items
    # Taken over by its runner, started, ended: a handful, whatever the item count.
    assert rows[0]["n"] <= 4, rows


class _Surrogates(BaseHTTPRequestHandler):
    """Answers JSON holding a lone surrogate, which JSON allows and nothing can store."""

    def do_GET(self) -> None:
        body = b'{"text": "broken \\ud800 text"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


async def test_an_output_that_cannot_be_stored_fails_its_node_at_once(stack, user):
    """A deterministic error is never retried as an infrastructure one: it used to
    retry the run 49 times over 22 minutes."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Surrogates)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        spec = {
            "name": "fetches a lone surrogate",
            "nodes": [
                node("get", "HttpRequest", url=f"http://127.0.0.1:{server.server_port}/"),
                node("out", "AgentOutput", name="body"),
            ],
            "links": [link("get", "response", "out", "value")],
        }
        graph = await create_graph(stack.gql, user, spec)
        started = await execute(stack.gql, user, graph["id"])
        done = await wait_for_end(stack.gql, user, started["id"], timeout=30)
    finally:
        server.shutdown()
    assert done["status"] == "FAILED", done
    [fetch] = [n for n in done["nodeExecutions"] if n["nodeId"] == node_ids(spec, graph)["get"]]
    assert fetch["status"] == "FAILED"
    assert fetch["error"].startswith("Output cannot be stored")
    assert done["outputs"] == {}
    assert f"execution {started['id']} hit an error" not in stack.worker_process.log()


async def test_nodes_left_queued_when_credits_run_out_end_with_their_events(stack, new_user):
    """Out of credit: the nodes that never started used to end TERMINATED in the
    database without an event."""
    person = new_user()
    await stack.gql.ok("{ me { id } }", token=person.token)
    available = await ledger.get_available(person.id)
    await ledger.record_transaction(
        person.id, 3 - available, CreditTransactionType.USAGE, f"drain:{person.id}"
    )
    spec = {
        "name": "more waits than credits",
        "nodes": [
            node("in", "AgentInput", name="items", type="array"),
            node("each", "ForEach"),
            node("wait", "Wait", seconds=0.3),
        ],
        "links": [link("in", "result", "each", "items"), link("each", "item", "wait", "input")],
    }
    graph = await create_graph(stack.gql, person, spec)
    started = await execute(stack.gql, person, graph["id"], {"items": list(range(40))})
    done = await wait_for_end(stack.gql, person, started["id"], timeout=60)
    assert done["status"] == "FAILED" and done["stats"]["error"] == "Insufficient credits"
    waits = [n for n in done["nodeExecutions"] if n["nodeId"] == node_ids(spec, graph)["wait"]]
    terminated = {n["id"] for n in waits if n["status"] == "TERMINATED"}
    assert terminated, waits
    events = await stream_events(stack, started["id"])
    announced = {
        e.data["nodeExecution"]["id"]
        for e in events
        if e.kind == "node" and e.data["nodeExecution"]["status"] == "TERMINATED"
    }
    assert announced == terminated
    assert events[-1].kind == "execution" and events[-1].data["execution"]["status"] == "FAILED"
    # The post-paid rule: never below zero by more than the nodes' own overrun.
    charged = await CreditTransaction.filter(usage_execution_id=started["id"])
    overrun = sum(-t.amount - 1 for t in charged)
    assert await ledger.get_balance(person.id) >= -overrun


async def test_concurrent_runs_of_per_second_nodes_never_overspend(stack, new_user):
    """Balance 1, twenty runs of three chained one-second Waits at once: they used
    to all run (balance -59). A node with a SECOND cost starts only if the available
    balance covers its minimum; below zero only by what a node ran past it."""
    person = new_user()
    await stack.gql.ok("{ me { id } }", token=person.token)
    available = await ledger.get_available(person.id)
    await ledger.record_transaction(
        person.id, 1 - available, CreditTransactionType.USAGE, f"drain:{person.id}"
    )
    spec = {
        "name": "three waits",
        "nodes": [
            node("w1", "Wait", input="x", seconds=1),
            node("w2", "Wait", seconds=1),
            node("w3", "Wait", seconds=1),
        ],
        "links": [link("w1", "output", "w2", "input"), link("w2", "output", "w3", "input")],
    }
    graph = await create_graph(stack.gql, person, spec)
    runs = await asyncio.gather(*(execute(stack.gql, person, graph["id"]) for _ in range(20)))
    ends = [await wait_for_end(stack.gql, person, r["id"], timeout=90) for r in runs]
    charged = await CreditTransaction.filter(
        usage_execution_id__in=[r["id"] for r in runs], type="USAGE"
    )
    balance = await ledger.get_balance(person.id)
    overrun = sum(-t.amount - 1 for t in charged)  # each Wait's minimum is 1
    assert balance >= -overrun, (balance, [t.amount for t in charged])
    assert len(charged) <= 2, [t.amount for t in charged]
    assert sum(1 for e in ends if e["stats"]["error"] == "Insufficient credits") >= 18
    assert await ledger.get_available(person.id) == balance  # nothing left held
    assert json.dumps(ends)  # every run ended
    view = await stack.gql.ok(GET_EXECUTION, {"id": runs[0]["id"]}, token=person.token)
    assert view["execution"]["status"] in ("COMPLETED", "FAILED")


async def test_values_that_double_at_every_step_end_at_a_bound(stack, user):
    """AddToList adding a list to itself doubles it: thirty steps turn 100 KB of
    input into 100 TB and end the worker (then every worker resuming the run). A
    node whose outputs pass MAX_NODE_OUTPUT_CHARS of JSON (64 MiB; 1 MB on this
    stack) fails with a clear error, and nothing after it runs."""
    gql = stack.gql
    # Eight steps (25 MB if the bound ever went): enough to pass it, never a danger.
    steps = [f"d{i}" for i in range(8)]
    spec = {
        "name": "doubling",
        "nodes": [
            node("in", "AgentInput", name="items", type="array"),
            *(node(step, "AddToList") for step in steps),
            node("out", "CountItems"),
        ],
        "links": [
            link("in", "result", "d0", "list"),
            link("in", "result", "d0", "entries"),
            *(
                link(before, "updated_list", after, pin)
                for before, after in itertools.pairwise(steps)
                for pin in ("list", "entries")
            ),
            link(steps[-1], "updated_list", "out", "collection"),
        ],
    }
    graph = await create_graph(gql, user, spec)
    ids = node_ids(spec, graph)
    started = await execute(gql, user, graph["id"], {"items": [1] * 50_000})
    brief = """query($id: ID!) { execution(id: $id) { status
      nodeExecutions { nodeId status error } } }"""
    deadline = asyncio.get_running_loop().time() + 120
    while True:
        done = (await gql.ok(brief, {"id": started["id"]}, token=user.token))["execution"]
        if done["status"] in ("COMPLETED", "FAILED", "TERMINATED"):
            break
        assert asyncio.get_running_loop().time() < deadline, done
        await asyncio.sleep(0.1)
    assert done["status"] == "FAILED", done
    by_node = {run["nodeId"]: run for run in done["nodeExecutions"]}
    # 100 KB of JSON doubled: 200 KB, 400 KB, 800 KB, then 1.6 MB is refused.
    assert [by_node[ids[step]]["status"] for step in steps[:4]] == ["COMPLETED"] * 3 + ["FAILED"]
    assert (
        "a node may yield at most 1,000,000 (MAX_NODE_OUTPUT_CHARS)"
        in (by_node[ids[steps[3]]]["error"])
    )
    assert all(ids[step] not in by_node for step in steps[4:]) and ids["out"] not in by_node
