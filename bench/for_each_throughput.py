"""ForEach throughput: 1,000 items fanned out into one sink node, run by a real worker.

AgentInput (a list of 1,000 numbers) -> ForEach -> StoreValue (the sink, which
runs once per item), started with executeGraph over HTTP and run by an
`agentgraph worker` process. The figure is node runs per second over the
execution's startedAt -> endedAt (stored by the worker): every node run of the
execution (the sink's 1,000, plus the input and the ForEach) over that time.

Baseline (same run, same database, sampled between the runs): INSERT + UPDATE
round trips per second, one after another, the rate at which one connection can record state changes
durably. The engine runs up to 16 sink runs of an execution at once, so a
ratio above 1 is possible.
"""

from __future__ import annotations

import asyncio

from bench.support import (
    bench_stack,
    figure_line,
    median,
    ms,
    round_trip_baseline,
    seconds_between,
    signed_in_user,
    wait_until_ended,
)

ITEMS = 1000
WARMUP, RUNS = 1, 3
EXECUTION = """query($id: ID!) { execution(id: $id) { status createdAt startedAt endedAt
  nodeExecutions { nodeId blockId status startedAt endedAt } } }"""


def fan_out_graph() -> dict:
    from tests.graph_builders import link, node

    return {
        "name": "for-each fan-out",
        "nodes": [
            node("in", "AgentInput", name="items", type="array"),
            node("each", "ForEach"),
            node("sink", "StoreValue"),
        ],
        "links": [
            link("in", "result", "each", "items"),
            link("each", "item", "sink", "input"),
        ],
    }


async def main() -> None:
    from tests.execution_helpers import execute
    from tests.graph_builders import create_graph
    from tests.harness import GraphQLClient

    async with (
        bench_stack(start_worker=True) as stack,
        round_trip_baseline(stack.database_url) as round_trips,
    ):
        gql = GraphQLClient(stack.server.base_url)
        try:
            user = await signed_in_user(gql)
            graph = await create_graph(gql, user, fan_out_graph())
            sink = next(n["id"] for n in graph["nodes"] if n["blockId"] == sink_block_id())
            rates, walls, counts, gaps = [], [], [], []
            for index in range(WARMUP + RUNS):
                started = await execute(gql, user, graph["id"], {"items": list(range(ITEMS))})
                status = await wait_until_ended(gql, user, started["id"])
                assert status == "COMPLETED", status
                data = await gql.ok(EXECUTION, {"id": started["id"]}, token=user.token)
                execution = data["execution"]
                nodes = execution["nodeExecutions"]
                ran_sink = sum(1 for n in nodes if n["nodeId"] == sink)
                assert ran_sink == ITEMS, ran_sink
                assert all(n["status"] == "COMPLETED" for n in nodes)
                if index < WARMUP:
                    continue
                wall = seconds_between(execution["startedAt"], execution["endedAt"])
                rates.append(len(nodes) / wall)
                walls.append(wall)
                counts.append(len(nodes))
                gaps.append(fan_out_gap(nodes, sink))
                await round_trips.sample(100)
        finally:
            await gql.aclose()
        round_trip = round_trips.median()

    rate = median(rates)
    baseline = 1 / round_trip
    print(f"ForEach over {ITEMS} items into one sink ({counts[0]} node runs), {RUNS} runs")
    print(f"  execution wall time: p50 {ms(median(walls))}")
    print(f"  node runs per second: {', '.join(f'{r:.0f}' for r in rates)}")
    print(f"  per node run: {ms(1 / rate)}")
    print(f"  ForEach end -> first sink run start: p50 {ms(median(gaps))}")
    print(f"  INSERT + UPDATE round trip baseline: p50 {ms(round_trip)} ({baseline:.0f}/s)")
    print(
        f"for_each_throughput: {rate:.0f} node runs/s, {rate / baseline:.2f}x the rate of "
        f"sequential INSERT + UPDATE round trips"
    )
    print(
        figure_line(
            "for_each_node_runs_per_second",
            rate,
            "node_runs/s",
            baseline,
            rate / baseline,
            baseline_unit="round_trips/s",
        )
    )


def fan_out_gap(nodes: list[dict], sink: str) -> float:
    """Seconds from the ForEach's end to the first sink run's start: the time the
    engine spends handing the 1,000 values on before any of them runs."""
    for_each_end = next(n["endedAt"] for n in nodes if n["blockId"] == for_each_block_id())
    first_sink = min(n["startedAt"] for n in nodes if n["nodeId"] == sink)
    return seconds_between(for_each_end, first_sink)


def for_each_block_id() -> str:
    from tests.graph_builders import block_id

    return block_id("ForEach")


def sink_block_id() -> str:
    from tests.graph_builders import block_id

    return block_id("StoreValue")


if __name__ == "__main__":
    asyncio.run(main())
