"""Exactly one runner per execution, even when a worker stalls (SEMANTICS.md §7).

Worker A runs a chain of paid Waits and is frozen with SIGSTOP (its event loop,
and everything else, stops: what a CPU-bound block or a catastrophic regex used
to do). Its job's lease in Redis lapses and worker B takes the job: B must wait
for A's runner lock instead of running the execution alongside A. Each node runs
once, each paid node is charged once.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator

import pytest
from tortoise import connections

from app.models import CreditTransaction, NodeExecution
from tests.conftest import TEST_ENV
from tests.execution_helpers import OwnStack, execute, wait_for_end, wait_for_node
from tests.graph_builders import create_graph, link, node, node_ids

STALL_SECONDS = 30
CHAIN = {
    "name": "waits",
    "nodes": [
        node("w1", "Wait", input="x", seconds=1),
        node("w2", "Wait", seconds=4),
        node("w3", "Wait", seconds=1),
        node("out", "AgentOutput", name="o"),
    ],
    "links": [
        link("w1", "output", "w2", "input"),
        link("w2", "output", "w3", "input"),
        link("w3", "output", "out", "value"),
    ],
}


@pytest.fixture(scope="module")
async def stack(database) -> AsyncIterator[OwnStack]:
    own = OwnStack(TEST_ENV, "one-runner")
    await own.start()
    try:
        yield own
    finally:
        await own.stop()


async def wait_for_log(worker, text: str, timeout: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while text not in worker.log():
        assert asyncio.get_running_loop().time() < deadline, f"no {text!r} in\n{worker.log()}"
        await asyncio.sleep(0.1)


async def runner_of(workers: list, execution_id: str) -> tuple:
    """(the worker running the execution, the other one)."""
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        for index, worker in enumerate(workers):
            if f"running execution {execution_id}" in worker.log():
                return worker, workers[1 - index]
        assert asyncio.get_running_loop().time() < deadline, "no worker took the run"
        await asyncio.sleep(0.05)


def assert_ran_once(done: dict, ids: dict[str, str]) -> None:
    assert done["status"] == "COMPLETED", done
    assert done["outputs"] == {"o": ["x"]}
    runs: dict[str, list[str]] = {}
    for run in done["nodeExecutions"]:
        runs.setdefault(run["nodeId"], []).append(run["status"])
    assert runs == {node_id: ["COMPLETED"] for node_id in ids.values()}


async def test_a_stalled_worker_never_runs_a_job_twice(stack, user):
    gql = stack.gql
    graph = await create_graph(gql, user, CHAIN)
    ids = node_ids(CHAIN, graph)
    workers = [stack.worker(), stack.worker()]
    await asyncio.gather(*(w.start() for w in workers))
    try:
        started = await execute(gql, user, graph["id"])
        first, second = await runner_of(workers, started["id"])
        await wait_for_node(gql, user, started["id"], ids["w2"], {"RUNNING"})
        first.process.send_signal(signal.SIGSTOP)  # a 30 s stall of A's whole process
        stalled_at = asyncio.get_running_loop().time()
        try:
            # A's lease lapses; B takes the job and must wait for A's lock.
            await wait_for_log(second, f"execution {started['id']} is held by another", 40)
            remaining = STALL_SECONDS - (asyncio.get_running_loop().time() - stalled_at)
            await asyncio.sleep(max(0.0, remaining))  # the stall itself, not a wait
            rows = await NodeExecution.filter(execution_id=started["id"]).count()
            assert rows == 2, "nothing ran while the only runner was frozen"
        finally:
            first.process.send_signal(signal.SIGCONT)
        done = await wait_for_end(gql, user, started["id"], timeout=60)
    finally:
        for worker in workers:
            worker.process.send_signal(signal.SIGCONT)
            await worker.stop()
    assert_ran_once(done, ids)
    # B got the lock only once A had ended the run: it found it COMPLETED.
    assert f"running execution {started['id']} (RUNNING)" not in second.log()
    assert f"resuming execution {started['id']}" not in second.log()
    usage = await CreditTransaction.filter(usage_execution_id=started["id"])
    by_id = {n["nodeId"]: n["id"] for n in done["nodeExecutions"]}
    assert sorted(t.key for t in usage) == sorted(
        f"{by_id[ids[k]]}:time" for k in ("w1", "w2", "w3")
    )


async def test_a_runner_that_lost_its_lock_while_stalled_stops_writing(stack, user):
    """A's lock connection dies while A is frozen: B takes the run over and
    finishes it. When A wakes, its next write finds another runner's epoch and A
    stops without writing anything."""
    gql = stack.gql
    graph = await create_graph(gql, user, CHAIN)
    ids = node_ids(CHAIN, graph)
    workers = [stack.worker(), stack.worker()]
    await asyncio.gather(*(w.start() for w in workers))
    db = connections.get("default")
    try:
        started = await execute(gql, user, graph["id"])
        first, second = await runner_of(workers, started["id"])
        await wait_for_node(gql, user, started["id"], ids["w2"], {"RUNNING"})
        first.process.send_signal(signal.SIGSTOP)
        try:
            await wait_for_log(second, f"execution {started['id']} is held by another", 40)
            # The server ends A's lock connection (as a network failure would).
            await db.execute_query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                "application_name = 'agentgraph-runner-locks' AND datname = current_database() "
                "AND pid IN (SELECT pid FROM pg_locks WHERE locktype = 'advisory')"
            )
            done = await wait_for_end(gql, user, started["id"], timeout=60)
        finally:
            first.process.send_signal(signal.SIGCONT)
        # A finds out at once: its lock connection is gone (or, if its write comes
        # first, the fence refuses it); either way it stops.
        deadline = asyncio.get_running_loop().time() + 30
        while not any(
            text in first.log()
            for text in (f"execution {started['id']} was taken over", "lost the runner locks")
        ):
            assert asyncio.get_running_loop().time() < deadline, first.log()
            await asyncio.sleep(0.1)
    finally:
        for worker in workers:
            worker.process.send_signal(signal.SIGCONT)
            await worker.stop()
    assert_ran_once(done, ids)
    assert f"running execution {started['id']}" in second.log()
    # A woke with w2 finished on its side: none of that reached the database.
    again = await NodeExecution.filter(execution_id=started["id"]).count()
    assert again == len(ids)
    usage = await CreditTransaction.filter(usage_execution_id=started["id"])
    assert len(usage) == len({t.key for t in usage}) == 3
