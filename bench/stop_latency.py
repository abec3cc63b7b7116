"""Stop latency: stopExecution of a run with 40,000 queued node executions.

AgentInput (40,000 items) -> ForEach -> Wait(60 s), run by an `agentgraph worker`
process: 16 Waits run, the rest wait QUEUED. Once they are all stored, the run is
stopped with stopExecution over HTTP; the figure is the time from sending it to
the execution being TERMINATED in the database (every node execution ended and
announced first). The promise is 2 s (SEMANTICS.md §7).

Baseline (same run, same database): one set-based UPDATE of 40,000 rows of a
scratch table, the least a stop of that many rows can cost.
"""

from __future__ import annotations

import asyncio
import time
import uuid

from bench.support import bench_stack, figure_line, median, ms, signed_in_user, time_stop

ITEMS = 40_000
RUNS = 2


def wide_graph() -> dict:
    from tests.graph_builders import link, node

    return {
        "name": "wide",
        "nodes": [
            node("in", "AgentInput", name="items", type="array"),
            node("each", "ForEach"),
            node("wait", "Wait", seconds=60),
        ],
        "links": [link("in", "result", "each", "items"), link("each", "item", "wait", "input")],
    }


async def update_floor(database_url: str) -> float:
    import asyncpg

    connection = await asyncpg.connect(database_url.split("?")[0])
    try:
        await connection.execute(
            "CREATE TABLE bench_stop_floor (id uuid PRIMARY KEY, run uuid, status text)"
        )
        run = uuid.uuid4()
        await connection.execute(
            "INSERT INTO bench_stop_floor SELECT gen_random_uuid(), $1, 'QUEUED' "
            "FROM generate_series(1, $2)",
            run,
            ITEMS,
        )
        await connection.execute("CREATE INDEX ON bench_stop_floor (run, status)")
        started = time.perf_counter()
        await connection.execute(
            "UPDATE bench_stop_floor SET status = 'TERMINATED' "
            "WHERE run = $1 AND status = 'QUEUED'",
            run,
        )
        return time.perf_counter() - started
    finally:
        await connection.close()


async def main() -> None:
    from app.models import NodeExecution
    from tests.execution_helpers import execute
    from tests.graph_builders import create_graph
    from tests.harness import GraphQLClient

    async with bench_stack(start_worker=True) as stack:
        gql = GraphQLClient(stack.server.base_url)
        try:
            user = await signed_in_user(gql)
            graph = await create_graph(gql, user, wide_graph())
            stops, queued_counts = [], []
            for _ in range(RUNS):
                run = await execute(gql, user, graph["id"], {"items": list(range(ITEMS))})
                # Settled: every item queued and announced, sixteen Waits running.
                deadline = time.monotonic() + 300
                while True:
                    queued = await NodeExecution.filter(
                        execution_id=run["id"], status="QUEUED"
                    ).count()
                    running = await NodeExecution.filter(
                        execution_id=run["id"], status="RUNNING"
                    ).count()
                    if (queued >= ITEMS - 16 and running == 16) or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.1)
                queued_counts.append(queued)
                stops.append(await time_stop(gql, user, run["id"]))
            floor = await update_floor(stack.database_url)
        finally:
            await gql.aclose()

    latency = median(stops)
    print(f"stop of a run with {queued_counts[0]} queued node executions, {RUNS} runs")
    print(f"  stopExecution -> TERMINATED: {', '.join(ms(s) for s in stops)}")
    print(f"  set-based UPDATE of {ITEMS} rows (floor): {ms(floor)}")
    print(f"stop_latency: {ms(latency)} (the promise is 2 s), {latency / floor:.1f}x the floor")
    print(
        figure_line("stop_latency_40k_queued", latency * 1000, "ms", floor * 1000, latency / floor)
    )


if __name__ == "__main__":
    asyncio.run(main())
