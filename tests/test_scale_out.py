"""Scale-out (OPERATIONS.md "Scale", issue 8): two API processes and two workers
on one PostgreSQL and Redis. 200 executions are started across both APIs and
watched from the other one; a worker is SIGKILLed mid-way. Every execution
must end correctly, every event be seen exactly once, and credits add up."""

from __future__ import annotations

import asyncio
import contextlib
import random

from app.models import CreditTransaction, CreditTransactionType, Execution, NodeExecution
from app.services import ledger
from tests.conftest import TEST_ENV
from tests.execution_helpers import EXECUTE
from tests.graph_builders import create_graph, link, node
from tests.harness import ApiServer, GraphQLClient, WorkerProcess, graphql_ws

EXECUTIONS = 200
USERS = 4
WATCHERS_PER_USER = 2  # websockets per user on the watching API, 25 operations each
GRANT = 5000

EVENTS = """subscription($id: ID!) {
  executionEvents(executionId: $id) {
    __typename
    ... on ExecutionStatusEvent { seq execution { id status outputs } }
    ... on NodeExecutionEvent { seq executionId nodeExecution { id status } }
  } }"""


def paid_graph(index: int) -> dict:
    """input -> Wait (0.2 s, 1 credit) -> StoreValue -> output."""
    return {
        "name": f"scale {index}",
        "nodes": [
            node("in", "AgentInput", name="text", type="string"),
            node("wait", "Wait", seconds=0.2),
            node("store", "StoreValue"),
            node("out", "AgentOutput", name="result"),
        ],
        "links": [
            link("in", "result", "wait", "input"),
            link("wait", "output", "store", "input"),
            link("store", "output", "out", "value"),
        ],
    }


class Watcher:
    """One websocket on the watching API, demultiplexing many subscriptions."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self.events: dict[str, list[dict]] = {}
        self.ended: dict[str, str] = {}

    async def watch(self, execution_id: str) -> None:
        self.events[execution_id] = []
        await self.ws.subscribe(EVENTS, {"id": execution_id}, op_id=execution_id)

    async def pump(self) -> None:
        while True:
            message = await self.ws.receive(timeout=120)
            op = message.get("id")
            if message["type"] == "next":
                payload = message["payload"]
                assert "errors" not in payload, payload
                self.events[op].append(payload["data"]["executionEvents"])
            elif message["type"] in ("complete", "error"):
                self.ended[op] = message["type"] if message["type"] == "complete" else str(message)


async def test_two_apis_two_workers_one_killed_nothing_lost(database, new_user, worker):
    apis = [ApiServer(TEST_ENV), ApiServer(TEST_ENV)]
    workers = [WorkerProcess(TEST_ENV), WorkerProcess(TEST_ENV)]
    await asyncio.gather(*(a.start() for a in apis), *(w.start() for w in workers))
    clients = [GraphQLClient(a.base_url) for a in apis]
    people = [new_user() for _ in range(USERS)]
    async with contextlib.AsyncExitStack() as stack:
        try:
            graphs = {}
            for i, person in enumerate(people):
                await clients[0].ok("{ me { id } }", token=person.token)
                await ledger.record_transaction(
                    person.id, GRANT, CreditTransactionType.GRANT, key=f"scale-grant-{person.id}"
                )
                graphs[person.id] = (await create_graph(clients[0], person, paid_graph(i)))["id"]

            # Each user watches from both APIs (whichever did not start the run).
            watchers: dict[tuple[int, int], list[Watcher]] = {}
            pumps = []
            for i, person in enumerate(people):
                for a, api in enumerate(apis):
                    auth = {"Authorization": f"Bearer {person.token}"}
                    for _ in range(WATCHERS_PER_USER):
                        ws = await stack.enter_async_context(graphql_ws(api.ws_url, auth))
                        watcher = Watcher(ws)
                        watchers.setdefault((i, a), []).append(watcher)
                        pumps.append(asyncio.create_task(watcher.pump()))

            started: list[tuple[int, str, Watcher]] = []
            text_of: dict[str, str] = {}
            rng = random.Random(7)
            killed = False

            async def start_one(n: int) -> None:
                i = n % USERS
                person, via = people[i], n % 2
                data = await clients[via].ok(
                    EXECUTE,
                    {"id": graphs[person.id], "inputs": {"text": f"run {n}"}},
                    token=person.token,
                )
                execution_id = data["executeGraph"]["id"]
                text_of[execution_id] = f"run {n}"
                candidates = watchers[(i, 1 - via)]
                watcher = min(candidates, key=lambda w: len(w.events))
                await watcher.watch(execution_id)
                started.append((i, execution_id, watcher))

            order = list(range(EXECUTIONS))
            rng.shuffle(order)
            for batch_start in range(0, EXECUTIONS, 20):
                await asyncio.gather(*(start_one(n) for n in order[batch_start : batch_start + 20]))
                if not killed and batch_start >= EXECUTIONS // 3:
                    # Mid-way: one worker dies with whatever it was running.
                    workers[0].kill()
                    killed = True

            deadline = asyncio.get_running_loop().time() + 180
            while any(eid not in w.ended for _, eid, w in started):
                if asyncio.get_running_loop().time() > deadline:
                    waiting = [eid for _, eid, w in started if eid not in w.ended]
                    states = await Execution.filter(id__in=waiting).values_list("id", "status")
                    raise AssertionError(f"{len(waiting)} never ended: {states[:10]}")
                await asyncio.sleep(0.2)

            for _, execution_id, watcher in started:
                assert watcher.ended[execution_id] == "complete", watcher.ended[execution_id]
                events = watcher.events[execution_id]
                seqs = [e["seq"] for e in events]
                # Snapshot first, then every later event exactly once, in order.
                assert events[0]["__typename"] == "ExecutionStatusEvent"
                assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs
                last = events[-1]
                assert last["__typename"] == "ExecutionStatusEvent"
                assert last["execution"]["status"] == "COMPLETED", last
                assert last["execution"]["outputs"] == {"result": [text_of[execution_id]]}

            # Credits: one Wait run (1 credit) per execution, charged exactly once.
            for i, person in enumerate(people):
                runs = sum(1 for j, _, _ in started if j == i)
                usage = await CreditTransaction.filter(
                    user_id=person.id, type=CreditTransactionType.USAGE
                ).values_list("amount", flat=True)
                assert sum(usage) == -runs, (runs, usage)
                # The balance is exactly the sum of the ledger (onboarding rewards
                # for running agents are GRANTs on top of the usage).
                amounts = await CreditTransaction.filter(
                    user_id=person.id, is_active=True
                ).values_list("amount", flat=True)
                assert await ledger.get_balance(person.id) == sum(amounts)
                grants_since = (
                    await CreditTransaction.filter(
                        user_id=person.id, type=CreditTransactionType.GRANT
                    )
                    .exclude(key__startswith="scale-grant-")
                    .values_list("amount", flat=True)
                )
                assert sum(amounts) == GRANT + sum(grants_since) - runs
            # No node ran twice, not even those the killed worker had finished.
            ids = [eid for _, eid, _ in started]
            runs = await NodeExecution.filter(execution_id__in=ids, status="COMPLETED").values_list(
                "execution_id", "node_id"
            )
            assert len(runs) == len(set(runs)) == 4 * EXECUTIONS
        finally:
            for task in pumps if "pumps" in locals() else ():
                task.cancel()
            for client in clients:
                await client.aclose()
            await asyncio.gather(*(a.stop() for a in apis), *(w.stop() for w in workers))
