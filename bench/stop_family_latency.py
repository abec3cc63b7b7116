"""Stop latency of a sub-graph family: stopExecution of a run with 272 sub-graph runs.

root: ForEach over 20 items -> SubGraph(middle); middle: ForEach over 20 items ->
SubGraph(leaf); leaf: Wait(60). Sixteen nodes of a run go at once, so the root
runs 16 middles, each running 16 leaves: 272 sub-graph runs, 256 Waits running,
the rest of the SubGraph nodes QUEUED. Once all of that runs, the root is stopped
over HTTP; the figure is the time from sending the stop to the root being
TERMINATED in the database, every run below it ended and announced first. The
promise is 2 s for any run size, sub-graphs included (SEMANTICS.md §7).

Baseline (same run, same database): one set-based UPDATE ending the family's
executions and their node executions, the least such a stop can cost.
"""

from __future__ import annotations

import asyncio
import time

from bench.support import bench_stack, figure_line, median, ms, signed_in_user, time_stop

FAN_OUT = 20
RUNNING_AT_ONCE = 16
CHILD_RUNS = RUNNING_AT_ONCE + RUNNING_AT_ONCE * RUNNING_AT_ONCE
RUNS = 2


def fan_out_graph(name: str, child_id: str) -> dict:
    from tests.graph_builders import link, node

    return {
        "name": name,
        "nodes": [
            node("each", "ForEach", items=[{"item": i} for i in range(FAN_OUT)]),
            node("sub", "SubGraph", graph_id=child_id, graph_version=1, inputs={}),
        ],
        "links": [link("each", "item", "sub", "inputs")],
    }


def leaf_graph() -> dict:
    from tests.graph_builders import node

    return {"name": "leaf", "nodes": [node("wait", "Wait", seconds=60)], "links": []}


async def family(root_id: str) -> list[str]:
    from app.models import Execution

    found, frontier = [root_id], [root_id]
    while frontier:
        frontier = [
            str(i)
            for i in await Execution.filter(parent_execution_id__in=frontier).values_list(
                "id", flat=True
            )
        ]
        found.extend(frontier)
    return found


async def update_floor(database_url: str, ids: list[str]) -> float:
    """The family's rows, already ended, written again by two set-based UPDATEs."""
    import asyncpg

    connection = await asyncpg.connect(database_url.split("?")[0])
    try:
        started = time.perf_counter()
        async with connection.transaction():
            await connection.execute(
                "UPDATE node_executions SET status = 'TERMINATED', ended_at = now() "
                "WHERE execution_id = ANY($1::uuid[])",
                ids,
            )
            await connection.execute(
                "UPDATE executions SET status = 'TERMINATED', ended_at = now() "
                "WHERE id = ANY($1::uuid[])",
                ids,
            )
        return time.perf_counter() - started
    finally:
        await connection.close()


async def main() -> None:
    from app.models import CreditTransactionType, Execution, NodeExecution
    from app.services import ledger
    from tests.execution_helpers import execute
    from tests.graph_builders import create_graph
    from tests.harness import GraphQLClient

    async with bench_stack(start_worker=True) as stack:
        gql = GraphQLClient(stack.server.base_url)
        try:
            user = await signed_in_user(gql)
            # 256 Waits charge by the second.
            await ledger.record_transaction(
                user.id, 10_000_000, CreditTransactionType.GRANT, f"grant:{user.id}"
            )
            leaf = await create_graph(gql, user, leaf_graph())
            middle = await create_graph(gql, user, fan_out_graph("middle", leaf["id"]))
            root = await create_graph(gql, user, fan_out_graph("root", middle["id"]))
            stops, floors = [], []
            for _ in range(RUNS):
                run = await execute(gql, user, root["id"], {})
                deadline = time.monotonic() + 300
                while True:
                    ids = await family(run["id"])
                    waits = await NodeExecution.filter(
                        execution_id__in=ids, status="RUNNING", block_id=leaf_wait_block()
                    ).count()
                    if (len(ids) > CHILD_RUNS and waits == RUNNING_AT_ONCE**2) or (
                        time.monotonic() > deadline
                    ):
                        break
                    await asyncio.sleep(0.1)
                print(f"  family of {len(ids) - 1} sub-graph runs, {waits} Waits running")
                stops.append(await time_stop(gql, user, run["id"]))
                unfinished = await Execution.filter(
                    id__in=ids, status__in=["QUEUED", "RUNNING", "REVIEW"]
                ).count()
                assert unfinished == 0, f"{unfinished} runs of the family still unfinished"
                floors.append(await update_floor(stack.database_url, ids))
        finally:
            await gql.aclose()

    latency, floor = median(stops), median(floors)
    print(f"stop of a run with {CHILD_RUNS} sub-graph runs, {RUNS} runs")
    print(f"  stopExecution -> TERMINATED: {', '.join(ms(s) for s in stops)}")
    print(f"  set-based UPDATEs of the family (floor): {', '.join(ms(s) for s in floors)}")
    print(f"stop_family_latency: {ms(latency)} (the promise is 2 s), {latency / floor:.1f}x")
    print(
        figure_line(
            "stop_latency_subgraph_family", latency * 1000, "ms", floor * 1000, latency / floor
        )
    )


def leaf_wait_block() -> str:
    from app.blocks.registry import block_by_name

    return block_by_name("Wait").id


if __name__ == "__main__":
    asyncio.run(main())
