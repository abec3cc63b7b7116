"""Event order under races (SEMANTICS.md §7): many subscriptions opened around
the moment runs end, over real websockets against a real worker.

Every executionEvents stream must be: (without afterSeq) a snapshot carrying
the seq it stands at, then every later event; (with afterSeq) every event after
it; seq strictly increasing; and the stream completes only after the terminal
event, with no gap before it. Every graphExecutionEvents stream must carry,
for each run, a gap-free tail of that run's status events.

A run's end is written to the database before its event is published, so a
subscriber that reads the snapshot in between sees a finished run whose last
events are still on their way; it must wait for them, not complete early.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools

from tests.execution_helpers import execute, wait_for_end
from tests.graph_builders import create_graph, echo_graph
from tests.harness import graphql_ws

EVENTS = """subscription($id: ID!, $after: Int) {
  executionEvents(executionId: $id, afterSeq: $after) {
    __typename
    ... on ExecutionStatusEvent { seq execution { id status } }
    ... on NodeExecutionEvent { seq nodeExecution { id status } }
  } }"""
GRAPH_EVENTS = """subscription($id: ID!) {
  graphExecutionEvents(graphId: $id) { seq execution { id status } } }"""

RUNS = 6
SOCKETS = 6
# Subscriptions opened after one of them has seen the run finished.
AFTER_THE_END = 12
# Live operations at once, over all sockets (the server takes 50 per socket).
MAX_LIVE = 120


class Mux:
    """Several websockets; many subscriptions each, demultiplexed by op id."""

    def __init__(self, sockets) -> None:
        self.sockets = sockets
        self.events: dict[str, list[dict]] = {}
        self.ended: dict[str, str] = {}
        self.arrived = asyncio.Event()
        self._ids = itertools.count()
        self._pumps = [asyncio.create_task(self._pump(ws)) for ws in sockets]

    async def open(self, query: str, variables: dict) -> str:
        op_id = f"op{next(self._ids)}"
        self.events[op_id] = []
        await self.sockets[int(op_id[2:]) % len(self.sockets)].subscribe(query, variables, op_id)
        return op_id

    async def _pump(self, ws) -> None:
        while True:
            message = await ws.receive(timeout=120)
            op_id = message.get("id")
            if message["type"] == "next":
                payload = message["payload"]
                assert "errors" not in payload, payload
                self.events[op_id].append(next(iter(payload["data"].values())))
            else:
                self.ended[op_id] = (
                    message["type"] if message["type"] == "complete" else str(message)
                )
            self.arrived.set()

    def live(self) -> int:
        return len(self.events) - len(self.ended)

    async def wait_for(self, condition, timeout: float = 60.0) -> None:
        async with asyncio.timeout(timeout):
            while not condition():
                failed = {op: how for op, how in self.ended.items() if how != "complete"}
                assert not failed, failed
                self.arrived.clear()
                await self.arrived.wait()

    async def aclose(self) -> None:
        for pump in self._pumps:
            pump.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)
        for pump in self._pumps:
            if not pump.cancelled() and pump.exception():
                raise pump.exception()


def _finished(events: list[dict]) -> bool:
    return any(
        e["__typename"] == "ExecutionStatusEvent" and e["execution"]["status"] == "COMPLETED"
        for e in events
    )


async def test_subscriptions_opened_around_run_ends_miss_nothing(api, gql, user, worker):
    graph = await create_graph(gql, user, echo_graph("order"))
    auth = {"Authorization": f"Bearer {user.token}"}
    async with contextlib.AsyncExitStack() as stack:
        sockets = [
            await stack.enter_async_context(graphql_ws(api.ws_url, auth)) for _ in range(SOCKETS)
        ]
        mux = Mux(sockets)
        stack.push_async_callback(mux.aclose)
        watching_graph: list[str] = []
        opened: dict[str, tuple[str, int | None]] = {}  # op -> (execution, afterSeq)
        for run in range(RUNS):
            started = await execute(gql, user, graph["id"], {"text": f"run {run}"})
            execution_id = started["id"]
            # Keep opening subscriptions (alternating: none and afterSeq 0) until
            # one has seen the run finish, then a few more; a graph subscription
            # at the start and a couple around the end.
            watching_graph.append(await mux.open(GRAPH_EVENTS, {"id": graph["id"]}))
            after_the_end = 0
            for n in itertools.count():
                # A slow run must not pile up more live operations than the
                # sockets take (MAX_OPERATIONS_PER_WEBSOCKET): wait for some to end.
                await mux.wait_for(lambda: mux.live() < MAX_LIVE)
                after = None if n % 2 == 0 else 0
                op = await mux.open(EVENTS, {"id": execution_id, "after": after})
                opened[op] = (execution_id, after)
                if any(
                    _finished(mux.events[op]) for op, (e, _) in opened.items() if e == execution_id
                ):
                    after_the_end += 1
                    if after_the_end in (1, AFTER_THE_END // 2):
                        watching_graph.append(await mux.open(GRAPH_EVENTS, {"id": graph["id"]}))
                    if after_the_end >= AFTER_THE_END:
                        break
                # Pacing, so the openings spread across the run's whole life.
                await asyncio.sleep(0.005)
            await wait_for_end(gql, user, execution_id)
            # Every executionEvents stream ends by itself.
            await mux.wait_for(lambda: all(op in mux.ended for op in opened))

        # The full record of each run, to compare against.
        full: dict[str, list[dict]] = {}
        for execution_id in {e for e, _ in opened.values()}:
            op = await mux.open(EVENTS, {"id": execution_id, "after": 0})
            await mux.wait_for(lambda op=op: op in mux.ended)
            full[execution_id] = mux.events[op]

        # A last run is the barrier for the graph subscriptions: once its end has
        # reached each of them, everything before it has too (one ordered stream).
        barrier = await execute(gql, user, graph["id"], {"text": "barrier"})
        await mux.wait_for(
            lambda: all(
                any(
                    e["execution"]["id"] == barrier["id"]
                    and e["execution"]["status"] == "COMPLETED"
                    for e in mux.events[op]
                )
                for op in watching_graph
            )
        )

    checked_snapshots = 0
    for op, (execution_id, after) in opened.items():
        events, record = mux.events[op], full[execution_id]
        last_seq = record[-1]["seq"]
        assert mux.ended[op] == "complete", (op, mux.ended[op])
        assert [e["seq"] for e in record] == list(range(1, last_seq + 1))
        if after is None:
            snapshot, rest = events[0], events[1:]
            assert snapshot["__typename"] == "ExecutionStatusEvent"
            # Every event after the snapshot's seq, up to and including the end.
            assert rest == record[snapshot["seq"] :], (op, snapshot, rest)
            if not rest:
                assert (
                    snapshot["seq"] == last_seq and snapshot["execution"]["status"] == "COMPLETED"
                )
            checked_snapshots += 1
        else:
            assert events == record, op
    assert checked_snapshots >= RUNS * AFTER_THE_END // 3

    statuses = ["QUEUED", "RUNNING", "COMPLETED"]
    for op in watching_graph:
        by_run: dict[str, list[dict]] = {}
        for event in mux.events[op]:
            by_run.setdefault(event["execution"]["id"], []).append(event)
        for run_events in by_run.values():
            seen = [e["execution"]["status"] for e in run_events]
            # A gap-free tail of the run's status events, each once, seq rising.
            assert seen == statuses[len(statuses) - len(seen) :], (op, seen)
            seqs = [e["seq"] for e in run_events]
            assert seqs == sorted(set(seqs)), seqs
