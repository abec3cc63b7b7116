"""Live event latency: executeGraph returning -> the run's first live event at a
websocket subscriber (graphql-transport-ws), p50 and p99 over 100 runs.

A subscriber listens to `graphExecutionEvents` of a three-node graph before any
run starts, as an open graph page does. Each run is started with executeGraph
over HTTP; the clock starts when its response is in, and stops when the
subscriber receives the run's RUNNING event, the first one a worker sends (the
QUEUED event is published by executeGraph itself, before it returns). The
latency splits into queue pick-up (createdAt -> startedAt, the worker's
timestamps) and delivery (startedAt -> arrival, the same machine's clock).
Runs start after a random pause of up to a second, as independent users would:
back-to-back runs would all start just after the worker's last queue poll and
so all wait nearly the whole poll interval.

Baseline (same run, same database, sampled between the runs): one INSERT +
UPDATE round trip.
"""

from __future__ import annotations

import asyncio
import random
import time
from datetime import UTC, datetime

from bench.support import (
    bench_stack,
    figure_line,
    median,
    ms,
    percentile,
    round_trip_baseline,
    seconds_between,
    signed_in_user,
)

WARMUP, RUNS = 3, 100
MAX_PAUSE_SECONDS = 1.0
GRAPH_EVENTS = """subscription($id: ID!) { graphExecutionEvents(graphId: $id) {
  seq execution { id status createdAt startedAt } } }"""


class Arrivals:
    """When each (execution id, status) event reached the subscriber."""

    def __init__(self) -> None:
        self.seen: dict[tuple[str, str], tuple[float, datetime, dict]] = {}
        self.changed = asyncio.Event()

    def record(self, execution: dict) -> None:
        key = (execution["id"], execution["status"])
        self.seen.setdefault(key, (time.perf_counter(), datetime.now(UTC), execution))
        self.changed.set()

    async def wait_for(self, execution_id: str, status: str) -> tuple[float, datetime, dict]:
        key = (execution_id, status)
        while key not in self.seen:
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), 60)
        return self.seen[key]


async def listen(ws, op_id: str, arrivals: Arrivals) -> None:
    async for message in ws.results(op_id, timeout=3600):
        if message["type"] != "next" or "errors" in message["payload"]:
            raise RuntimeError(f"subscription ended: {message}")
        arrivals.record(message["payload"]["data"]["graphExecutionEvents"]["execution"])


async def main() -> None:
    from tests.execution_helpers import execute
    from tests.graph_builders import create_graph, echo_graph
    from tests.harness import GraphQLClient, graphql_ws

    async with (
        bench_stack(start_worker=True) as stack,
        round_trip_baseline(stack.database_url) as round_trips,
    ):
        gql = GraphQLClient(stack.server.base_url)
        try:
            user = await signed_in_user(gql)
            graph = await create_graph(gql, user, echo_graph())
            auth = {"Authorization": f"Bearer {user.token}"}
            latencies, pickups, deliveries, queued = [], [], [], []
            async with graphql_ws(stack.server.ws_url, auth) as ws:
                arrivals = Arrivals()
                pauses = random.Random(7)
                op_id = await ws.subscribe(GRAPH_EVENTS, {"id": graph["id"]})
                listener = asyncio.create_task(listen(ws, op_id, arrivals))
                try:
                    for index in range(WARMUP + RUNS):
                        await asyncio.sleep(pauses.uniform(0, MAX_PAUSE_SECONDS))
                        started = await execute(gql, user, graph["id"], {"text": f"run {index}"})
                        returned = time.perf_counter()
                        arrived, arrived_wall, execution = await arrivals.wait_for(
                            started["id"], "RUNNING"
                        )
                        queued_at, _, _ = await arrivals.wait_for(started["id"], "QUEUED")
                        await arrivals.wait_for(started["id"], "COMPLETED")
                        if index < WARMUP:
                            continue
                        await round_trips.sample(5)
                        latencies.append(arrived - returned)
                        queued.append(queued_at - returned)
                        pickups.append(
                            seconds_between(execution["createdAt"], execution["startedAt"])
                        )
                        deliveries.append(
                            (
                                arrived_wall - datetime.fromisoformat(execution["startedAt"])
                            ).total_seconds()
                        )
                finally:
                    listener.cancel()
                    await asyncio.gather(listener, return_exceptions=True)
        finally:
            await gql.aclose()
        baseline = round_trips.median()

    p50, p99 = median(latencies), percentile(latencies, 99)
    print(f"executeGraph returned -> first worker event (RUNNING) at a subscriber, {RUNS} runs")
    print(f"  latency: p50 {ms(p50)}, p99 {ms(p99)}, max {ms(max(latencies))}")
    print(
        f"  of which queue pick-up (createdAt -> startedAt): p50 {ms(median(pickups))}, "
        f"p99 {ms(percentile(pickups, 99))}"
    )
    print(
        f"  of which delivery (startedAt -> at the subscriber): p50 {ms(median(deliveries))}, "
        f"p99 {ms(percentile(deliveries, 99))}"
    )
    print(
        f"  the QUEUED event (published by executeGraph) arrived {ms(median(queued))} "
        f"after the response (p50; negative: before it)"
    )
    print(f"  INSERT + UPDATE round trip baseline: p50 {ms(baseline)}")
    print(
        f"event_latency: p50 {ms(p50)}, p99 {ms(p99)}; "
        f"{p50 / baseline:.0f}x / {p99 / baseline:.0f}x an INSERT + UPDATE round trip"
    )
    print(figure_line("event_latency_p50", p50 * 1000, "ms", baseline * 1000, p50 / baseline))
    print(figure_line("event_latency_p99", p99 * 1000, "ms", baseline * 1000, p99 / baseline))


if __name__ == "__main__":
    asyncio.run(main())
