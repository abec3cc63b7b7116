"""Attacks on stopping a whole sub-graph family (issue 12, workers/engine/family_end.py).

Each test drives the real API and worker processes of an OwnStack and then checks
the promises of a stop on everything the family left behind:
- every run of the family ends, and its stream ends with its own end event;
- every node execution's last event (in its run's stream and in every ancestor's
  stream) carries the status the database holds, before that run's end event;
- a node's cost is what the ledger charged under its keys; the root's stats.cost
  is the family's node costs; nothing stays held; balance == sum of transactions.

Reproduce: `.venv/bin/pytest tests/test_family_stop_attack.py -q -x -k <name>`.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator

import pytest

from app.events import EventReader
from app.models import CreditTransaction, CreditTransactionType, Execution, NodeExecution
from app.services import ledger
from app.services.execution_family import family_of
from tests.conftest import TEST_ENV
from tests.execution_helpers import OwnStack, execute
from tests.graph_builders import create_graph, link, node

STOP = "mutation($id: ID!) { stopExecution(id: $id) { id status } }"
TERMINAL = {"COMPLETED", "FAILED", "TERMINATED"}


@pytest.fixture(scope="module")
async def stack(database) -> AsyncIterator[OwnStack]:
    own = OwnStack(TEST_ENV, "famstop")
    await own.start()
    worker = own.worker()
    await worker.start()
    own.worker_process = worker
    try:
        yield own
    finally:
        await own.worker_process.stop()
        await own.stop()


async def rich_user(stack: OwnStack, new_user, credits: int = 1_000_000):
    person = new_user()
    await stack.gql.ok("{ me { id } }", token=person.token)
    await ledger.record_transaction(
        person.id, credits, CreditTransactionType.GRANT, f"grant:{person.id}"
    )
    return person


async def until(predicate, *args, timeout: float = 120.0, what: str = "") -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate(*args):
        assert asyncio.get_running_loop().time() < deadline, f"timed out: {what}"
        await asyncio.sleep(0.05)


async def root_ended(root_id) -> bool:
    return (await Execution.get(id=root_id)).status in TERMINAL


async def family_problems(stack: OwnStack, user, root_id) -> list[str]:
    """Everything a finished family breaks of the stop's promises."""
    problems: list[str] = []
    family = await family_of(uuid.UUID(str(root_id)))
    ids = [m.id for m in family]
    executions = {e.id: e for e in await Execution.filter(id__in=ids)}
    rows = await NodeExecution.filter(execution_id__in=ids).values(
        "id", "execution_id", "status", "cost"
    )
    for e in executions.values():
        if e.status not in TERMINAL:
            problems.append(f"run {e.id} still {e.status}")
    for r in rows:
        if r["status"] not in TERMINAL:
            problems.append(f"node {r['id']} still {r['status']}")
    redis = stack.redis()
    try:
        reader = EventReader(redis, stack.extra_env["REDIS_PREFIX"])
        streams = {m.id: await reader.after(m.id, 0) for m in family}
    finally:
        await redis.aclose()
    by_run = defaultdict(list)
    for r in rows:
        by_run[r["execution_id"]].append(r)
    for member in family:
        events = streams[member.id]
        db_status = str(executions[member.id].status)
        if [e.seq for e in events] != list(range(1, len(events) + 1)):
            problems.append(f"run {member.id}: seqs not gapless")
        if not events or events[-1].kind != "execution":
            problems.append(f"run {member.id} ({db_status}): stream does not end with its end")
        elif events[-1].data["execution"]["status"] != db_status:
            got = events[-1].data["execution"]["status"]
            problems.append(f"run {member.id}: last event says {got}, database {db_status}")
        last_node = {}
        for e in events:
            if e.kind == "node":
                last_node[e.data["nodeExecution"]["id"]] = e.data["nodeExecution"]["status"]
        below = {m.id for m in family if member.id in (m.id, *m.ancestors)}
        for run_id in below:
            for r in by_run[run_id]:
                got = last_node.get(str(r["id"]))
                if got != str(r["status"]):
                    problems.append(
                        f"stream of {member.id}: node {r['id']} of run {run_id} "
                        f"last event {got}, database {r['status']}"
                    )
    # Costs: each node's cost is what the ledger took under its keys.
    charged = defaultdict(int)
    for key, amount in await CreditTransaction.filter(user_id=user.id).values_list("key", "amount"):
        charged[key.removesuffix(":time")] -= amount
    for r in rows:
        if charged.get(str(r["id"]), 0) != r["cost"]:
            problems.append(
                f"node {r['id']} ({r['status']}): cost {r['cost']}, "
                f"ledger charged {charged.get(str(r['id']), 0)}"
            )
    root = executions[uuid.UUID(str(root_id))]
    family_cost = sum(r["cost"] for r in rows)
    if (root.stats or {}).get("cost") != family_cost:
        problems.append(f"root stats.cost {(root.stats or {}).get('cost')} != {family_cost}")
    balance = await ledger.get_balance(user.id)
    if await ledger.get_available(user.id) != balance:
        problems.append("something is still held")
    total = sum(
        a
        for a in await CreditTransaction.filter(user_id=user.id, is_active=True).values_list(
            "amount", flat=True
        )
    )
    if total != balance:
        problems.append(f"balance {balance} != sum of transactions {total}")
    return problems


async def children_in(run_id, status: str, at_least: int) -> bool:
    found = await Execution.filter(parent_execution_id=run_id, status=status).count()
    return found >= at_least


def fan_out(name: str, child_id: str, items: int) -> dict:
    return {
        "name": name,
        "nodes": [
            node("each", "ForEach", items=[{"i": i} for i in range(items)]),
            node("sub", "SubGraph", graph_id=child_id, graph_version=1),
        ],
        "links": [link("each", "item", "sub", "inputs")],
    }


QUICK_LEAF = {
    "name": "quick",
    "nodes": [node("keep", "StoreValue", data="x"), node("out", "AgentOutput", name="r")],
    "links": [link("keep", "output", "out", "value")],
}


async def test_children_ending_on_their_own_during_a_stop_announce_their_end(stack, new_user):
    """Children that end on their own just as the stop cancels their SubGraph node:
    each child's end must still be announced (its stream must end)."""
    person = await rich_user(stack, new_user)
    leaf = await create_graph(stack.gql, person, QUICK_LEAF)
    root = await create_graph(stack.gql, person, fan_out("root", leaf["id"], 3000))
    problems = []
    for round_ in range(4):
        run = await execute(stack.gql, person, root["id"])

        await until(children_in, run["id"], "COMPLETED", 40 + 25 * round_, what="children")
        await stack.gql.ok(STOP, {"id": run["id"]}, token=person.token)
        await until(root_ended, run["id"], timeout=30, what="root end")
        problems += await family_problems(stack, person, run["id"])
    assert problems == [], "\n".join(problems)
