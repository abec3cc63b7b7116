"""A worker that dies mid-run loses nothing (SEMANTICS.md §7, OPERATIONS.md Scale).

Real processes: an API and workers with a queue of their own (so the session's
worker never takes these jobs and each test decides which worker runs what).
Worker A starts the run and dies while a long Wait node runs; worker B resumes
it. A run holds arq's in-progress key on a lease (PEXPIRE 10 s, renewed every
3 s, workers/jobs/executions.py): after SIGKILL nothing renews it, it lapses,
and B, polling the queue, takes the job again. After SIGTERM arq cancels the
job and gives it back at once. Either way B resumes from the stored node
executions: what completed is neither run nor charged again.
"""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import AsyncIterator

import pytest
from tortoise import connections

from app.clock import utcnow
from app.models import CreditTransaction, Execution
from tests.conftest import TEST_ENV
from tests.execution_helpers import (
    GET_EXECUTION,
    OwnStack,
    execute,
    wait_for_end,
    wait_for_node,
)
from tests.graph_builders import create_graph, link, node, node_ids
from tests.harness import WorkerProcess, graphql_ws

EVENTS = """subscription($id: ID!) { executionEvents(executionId: $id) {
  __typename
  ... on ExecutionStatusEvent { seq execution { id status outputs } }
  ... on NodeExecutionEvent { seq executionId nodeExecution { id nodeId status } } } }"""

# in -> keep -> w1 -> long -> w3 -> out; the Waits are paid by the second.
CHAIN = {
    "name": "chain",
    "nodes": [
        node("in", "AgentInput", name="text", type="string"),
        node("keep", "StoreValue"),
        node("w1", "Wait", seconds=0.2),
        node("long", "Wait", seconds=3),
        node("w3", "Wait", seconds=0.2),
        node("out", "AgentOutput", name="result"),
    ],
    "links": [
        link("in", "result", "keep", "input"),
        link("keep", "output", "w1", "input"),
        link("w1", "output", "long", "input"),
        link("long", "output", "w3", "input"),
        link("w3", "output", "out", "value"),
    ],
}
PAID = ("w1", "long", "w3")
DONE_BEFORE_THE_CRASH = ("in", "keep", "w1")


@pytest.fixture(scope="module")
async def stack(database) -> AsyncIterator[OwnStack]:
    own = OwnStack(TEST_ENV, "crash")
    await own.start()
    try:
        yield own
    finally:
        await own.stop()


async def credits(gql, user) -> int:
    return (await gql.ok("{ me { credits } }", token=user.token))["me"]["credits"]


async def collect_events(ws, execution_id: str) -> list[dict]:
    op_id = await ws.subscribe(EVENTS, {"id": execution_id})
    events = []
    async for message in ws.results(op_id, timeout=40):
        assert message["type"] in ("next", "complete"), message
        if message["type"] == "next":
            events.append(message["payload"]["data"]["executionEvents"])
    return events


async def crash_and_resume(
    stack: OwnStack, user, end_first_worker, *, second_waits: bool = False
) -> None:
    """Run CHAIN on worker A, end A with `end_first_worker(A, B)` while the long
    Wait runs, and check that B finishes the run exactly as if nothing happened.

    With `second_waits`, B is started before the run but held (SIGSTOP) so that
    A takes the job; `end_first_worker` lets it go (SIGCONT). Starting B only
    once the long Wait runs would race with it: on a busy machine a worker takes
    seconds to start, and A could finish the run meanwhile."""
    gql = stack.gql
    graph = await create_graph(gql, user, CHAIN)
    ids = node_ids(CHAIN, graph)
    before_credits = await credits(gql, user)
    first = stack.worker()
    second = stack.worker()
    await first.start()
    if second_waits:
        await second.start()
        second.process.send_signal(signal.SIGSTOP)
    try:
        async with graphql_ws(stack.api.ws_url, {"Authorization": f"Bearer {user.token}"}) as ws:
            started = await execute(gql, user, graph["id"], {"text": "hello"})
            events_task = asyncio.create_task(collect_events(ws, started["id"]))
            mid_run = await wait_for_node(gql, user, started["id"], ids["long"], {"RUNNING"})
            await end_first_worker(first, second)
            assert first.process.poll() is not None  # A is gone
            done = await wait_for_end(gql, user, started["id"], timeout=40)
            events = await events_task
    finally:
        first.kill()
        if second.process is not None and second.process.poll() is None:
            second.process.send_signal(signal.SIGCONT)
        await second.stop()

    assert started["id"] in first.log()
    assert f"resuming execution {started['id']}" in second.log()

    assert done["status"] == "COMPLETED", done
    assert done["outputs"] == {"result": ["hello"]}
    runs: dict[str, list[dict]] = {}
    for run in done["nodeExecutions"]:
        runs.setdefault(run["nodeId"], []).append(run)
    # Every node ran to completion exactly once...
    assert {key: [r["status"] for r in runs[node_id]] for key, node_id in ids.items()} == {
        key: ["COMPLETED"] for key in ids
    }
    # ...and what had completed before the crash was not run again.
    before = {n["nodeId"]: n for n in mid_run["nodeExecutions"]}
    for key in DONE_BEFORE_THE_CRASH:
        assert before[ids[key]]["status"] == "COMPLETED"
        assert runs[ids[key]][0] == before[ids[key]]
    # The node that was running resumed as the same node execution, started anew.
    interrupted = runs[ids["long"]][0]
    assert interrupted["id"] == before[ids["long"]]["id"]
    assert interrupted["startedAt"] > before[ids["long"]]["startedAt"]

    # One USAGE transaction per paid node execution: none doubled, none lost.
    usage = await CreditTransaction.filter(usage_execution_id=started["id"])
    assert {t.type for t in usage} == {"USAGE"}
    assert sorted(t.key for t in usage) == sorted(f"{runs[ids[k]][0]['id']}:time" for k in PAID)
    cost = -sum(t.amount for t in usage)
    assert cost >= len(PAID)
    assert done["stats"]["cost"] == cost
    assert done["stats"]["nodeCount"] == len(CHAIN["nodes"])
    assert await credits(gql, user) == before_credits - cost

    # A subscriber that stayed connected through the crash saw the run end.
    seqs = [e["seq"] for e in events[1:]]
    assert seqs == sorted(set(seqs))
    assert events[-1]["execution"]["status"] == "COMPLETED"
    completed_events = [
        e["nodeExecution"]["nodeId"]
        for e in events
        if e["__typename"] == "NodeExecutionEvent" and e["nodeExecution"]["status"] == "COMPLETED"
    ]
    assert sorted(completed_events) == sorted(ids.values())


async def test_killed_worker_run_resumes_on_another_worker(stack, user):
    async def kill(first: WorkerProcess, second: WorkerProcess) -> None:
        first.kill()  # SIGKILL: no clean-up at all
        await second.start()

    await crash_and_resume(stack, user, kill)


async def test_worker_stopped_mid_run_hands_the_run_to_another(stack, user):
    async def shut_down(first: WorkerProcess, second: WorkerProcess) -> None:
        # B is already waiting while A shuts down, as in a rolling deploy.
        second.process.send_signal(signal.SIGCONT)
        await first.stop()  # SIGTERM: arq cancels the job and puts it back

    await crash_and_resume(stack, user, shut_down, second_waits=True)


def _two_try_workers(stack) -> tuple[WorkerProcess, WorkerProcess]:
    """Two workers (not started) whose runs have RUN_MAX_TRIES=2."""
    env = {**stack.extra_env, "RUN_MAX_TRIES": "2"}
    return WorkerProcess(stack.env, extra_env=env), WorkerProcess(stack.env, extra_env=env)


async def test_a_run_that_keeps_killing_its_worker_ends_failed(stack, user):
    """Every try costs one of RUN_MAX_TRIES (2 here); a run whose worker died on
    each earlier try ends FAILED on its last, unrun, instead of staying RUNNING
    once arq refuses it another try, and its slot serves the next run."""
    gql = stack.gql
    graph = await create_graph(gql, user, CHAIN)
    ids = node_ids(CHAIN, graph)
    first, second = _two_try_workers(stack)
    await first.start()
    try:
        started = await execute(gql, user, graph["id"], {"text": "again"})
        await wait_for_node(gql, user, started["id"], ids["long"], {"RUNNING"})
        first.kill()
        await second.start()
        done = await wait_for_end(gql, user, started["id"], timeout=40)
        later = await execute(gql, user, graph["id"], {"text": "next"})
        after = await wait_for_end(gql, user, later["id"], timeout=40)
    finally:
        first.kill()
        await second.stop()
    assert done["status"] == "FAILED", done
    assert done["stats"]["error"] == (
        "Internal error: the run was given up after 1 tries, each ended by its worker "
        "dying or an error"
    )
    by_node = {n["nodeId"]: n for n in done["nodeExecutions"]}
    assert by_node[ids["long"]]["status"] == "TERMINATED"
    assert ids["w3"] not in by_node
    assert "its last try; it ends FAILED without running" in second.log()
    assert after["status"] == "COMPLETED", after


async def test_a_graceful_hand_over_does_not_spend_the_runs_tries(stack, user):
    """SIGTERM (a rolling deploy) hands the run to another worker: nothing died
    and nothing failed, so even with RUN_MAX_TRIES=2 the run completes."""
    gql = stack.gql
    graph = await create_graph(gql, user, CHAIN)
    ids = node_ids(CHAIN, graph)
    first, second = _two_try_workers(stack)
    await first.start()
    await second.start()
    second.process.send_signal(signal.SIGSTOP)
    try:
        started = await execute(gql, user, graph["id"], {"text": "deployed"})
        await wait_for_node(gql, user, started["id"], ids["long"], {"RUNNING"})
        second.process.send_signal(signal.SIGCONT)
        await first.stop()
        done = await wait_for_end(gql, user, started["id"], timeout=60)
    finally:
        first.kill()
        if second.process is not None and second.process.poll() is None:
            second.process.send_signal(signal.SIGCONT)
        await second.stop()
    assert done["status"] == "COMPLETED", done["stats"]["error"]
    assert done["outputs"] == {"result": ["deployed"]}


async def test_stop_after_the_worker_died_ends_the_run(stack, user):
    """Stopping a run whose worker died: the next worker ends it TERMINATED
    instead of resuming it."""
    gql = stack.gql
    graph = await create_graph(gql, user, CHAIN)
    ids = node_ids(CHAIN, graph)
    first = stack.worker()
    second = stack.worker()
    await first.start()
    try:
        started = await execute(gql, user, graph["id"], {"text": "bye"})
        await wait_for_node(gql, user, started["id"], ids["long"], {"RUNNING"})
        first.kill()
        stopped = await gql.ok(
            "mutation($id: ID!) { stopExecution(id: $id) { id } }",
            {"id": started["id"]},
            token=user.token,
        )
        assert stopped["stopExecution"]["id"] == started["id"]
        await second.start()
        done = await wait_for_end(gql, user, started["id"], timeout=40)
    finally:
        first.kill()
        await second.stop()
    assert done["status"] == "TERMINATED", done
    by_node = {n["nodeId"]: n for n in done["nodeExecutions"]}
    assert by_node[ids["long"]]["status"] == "TERMINATED"
    assert ids["w3"] not in by_node
    after = (await gql.ok(GET_EXECUTION, {"id": started["id"]}, token=user.token))["execution"]
    assert after["status"] == "TERMINATED"


async def test_sub_graph_run_resumes_inside_its_parent(stack, user):
    """A SubGraph node that was running resumes the same child run, which
    resumes its own interrupted node."""
    gql = stack.gql
    child_spec = {
        "name": "child",
        "nodes": [
            node("in", "AgentInput", name="text", type="string"),
            node("w1", "Wait", seconds=0.1),
            node("long", "Wait", seconds=2),
            node("out", "AgentOutput", name="result"),
        ],
        "links": [
            link("in", "result", "w1", "input"),
            link("w1", "output", "long", "input"),
            link("long", "output", "out", "value"),
        ],
    }
    child = await create_graph(gql, user, child_spec)
    child_ids = node_ids(child_spec, child)
    parent_spec = {
        "name": "parent",
        "nodes": [
            node("sub", "SubGraph", graph_id=child["id"], graph_version=1, inputs={"text": "in"}),
            node("out", "AgentOutput", name="final"),
        ],
        "links": [link("sub", "result", "out", "value")],
    }
    parent = await create_graph(gql, user, parent_spec)
    sub_node = node_ids(parent_spec, parent)["sub"]
    first = stack.worker()
    second = stack.worker()
    await first.start()
    try:
        started = await execute(gql, user, parent["id"])
        await wait_for_node(gql, user, started["id"], sub_node, {"RUNNING"})
        child_run = None
        for _ in range(600):
            child_run = await Execution.get_or_none(parent_execution_id=started["id"])
            if (
                child_run
                and await child_run.node_executions.filter(
                    node_id=child_ids["long"], status="RUNNING"
                ).exists()
            ):
                break
            await asyncio.sleep(0.05)
        assert child_run is not None
        await second.start()
        await first.stop()
        done = await wait_for_end(gql, user, started["id"], timeout=40)
    finally:
        first.kill()
        await second.stop()
    assert done["status"] == "COMPLETED", done
    assert done["outputs"] == {"final": ["in"]}
    assert [(n["nodeId"], n["status"]) for n in done["nodeExecutions"]] == [
        (sub_node, "COMPLETED"),
        (node_ids(parent_spec, parent)["out"], "COMPLETED"),
    ]
    # Still the one child run, each of its nodes completed once.
    assert await Execution.filter(parent_execution_id=started["id"]).count() == 1
    child_view = (await gql.ok(GET_EXECUTION, {"id": str(child_run.id)}, token=user.token))[
        "execution"
    ]
    assert child_view["status"] == "COMPLETED"
    assert sorted((n["nodeId"], n["status"]) for n in child_view["nodeExecutions"]) == sorted(
        (node_id, "COMPLETED") for node_id in child_ids.values()
    )
    usage = await CreditTransaction.filter(usage_execution_id=child_run.id)
    assert len(usage) == 2  # w1 and long, once each
    assert done["stats"]["cost"] == -sum(t.amount for t in usage)


async def test_transient_database_error_mid_run_is_retried(stack, user):
    """An error outside any block (here the database refusing one write, injected
    with a trigger that fires once) must not leave the run hanging: the job runs
    again and resumes."""
    marker = f"flaky-{uuid.uuid4().hex}"
    name = marker.replace("-", "_")
    db = connections.get("default")
    await db.execute_script(
        f"""
        CREATE SEQUENCE {name};
        CREATE FUNCTION {name}() RETURNS trigger AS $$
        BEGIN
          IF NEW.status = 'RUNNING' AND NEW.input_data::text LIKE '%{marker}%' THEN
            IF nextval('{name}') = 1 THEN
              RAISE EXCEPTION 'injected transient failure';
            END IF;
          END IF;
          RETURN NEW;
        END $$ LANGUAGE plpgsql;
        CREATE TRIGGER {name} BEFORE UPDATE ON node_executions
          FOR EACH ROW EXECUTE FUNCTION {name}();
        """
    )
    spec = {
        "name": "flaky",
        "nodes": [node("keep", "StoreValue", data=marker), node("out", "AgentOutput", name="o")],
        "links": [link("keep", "output", "out", "value")],
    }
    worker = stack.worker()
    await worker.start()
    try:
        graph = await create_graph(stack.gql, user, spec)
        started = await execute(stack.gql, user, graph["id"])
        done = await wait_for_end(stack.gql, user, started["id"], timeout=30)
    finally:
        await worker.stop()
        await db.execute_script(
            f"DROP TRIGGER {name} ON node_executions; DROP FUNCTION {name}(); DROP SEQUENCE {name};"
        )
    assert "injected transient failure" in worker.log()
    assert done["status"] == "COMPLETED", done
    assert done["outputs"] == {"o": [marker]}
    assert sorted(n["status"] for n in done["nodeExecutions"]) == ["COMPLETED", "COMPLETED"]


async def test_end_written_but_never_announced_is_announced_by_the_next_worker(stack, user):
    """The window between a worker writing a run's end and publishing its event:
    a worker dying there left subscribers waiting for ever. Here the end is
    written directly, as that worker would have, before any worker runs the
    job; the worker that takes the job must announce it."""
    gql = stack.gql
    graph = await create_graph(gql, user)
    started = await execute(gql, user, graph["id"], {"text": "x"})
    worker = stack.worker()
    async with graphql_ws(stack.api.ws_url, {"Authorization": f"Bearer {user.token}"}) as ws:
        op_id = await ws.subscribe(EVENTS, {"id": started["id"]})
        snapshot = await anext(ws.results(op_id))
        assert snapshot["payload"]["data"]["executionEvents"]["execution"]["status"] == "QUEUED"
        await Execution.filter(id=started["id"]).update(status="COMPLETED", ended_at=utcnow())
        await worker.start()
        try:
            rest = [m async for m in ws.results(op_id, timeout=20)]
        finally:
            await worker.stop()
    assert rest[-1]["type"] == "complete"
    events = [m["payload"]["data"]["executionEvents"] for m in rest[:-1]]
    assert [e["execution"]["status"] for e in events] == ["COMPLETED"]


async def test_a_running_job_is_held_on_a_short_lease(gql, user, worker):
    """arq would mark a run in progress for a day; the lease keeps it to 10 s, so
    a dead worker's run is picked up again within seconds."""
    from redis.asyncio import Redis

    from tests.execution_helpers import execute, wait_for_end

    spec = {
        "name": "leased",
        "nodes": [node("w", "Wait", input="x", seconds=4), node("o", "AgentOutput", name="o")],
        "links": [link("w", "output", "o", "value")],
    }
    graph = await create_graph(gql, user, spec)
    started = await execute(gql, user, graph["id"])
    redis = Redis.from_url(TEST_ENV["REDIS_URL"])
    try:
        seen = []
        for _ in range(60):
            # The job id carries REDIS_PREFIX (app.clients.redis.arq_job_id).
            job_id = f"{TEST_ENV['REDIS_PREFIX']}run:{started['id']}"
            ttl = await redis.pttl(f"arq:in-progress:{job_id}")
            if ttl > 0:
                seen.append(ttl)
            await asyncio.sleep(0.1)
        assert seen, "the job was never seen in progress"
        assert max(seen) <= 10_000
    finally:
        await redis.aclose()
    assert (await wait_for_end(gql, user, started["id"]))["status"] == "COMPLETED"
