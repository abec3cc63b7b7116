"""Fair start wait: how long user B's run waits to start behind user A's backlog.

One `agentgraph worker` with WORKER_MAX_RUNS=4 and the default per-user cap (25):
A's runs alone fill every slot of the worker. A queues BACKLOG runs of
Wait(NODE_SECONDS); once A's runs hold every slot, B starts SAMPLES runs one after
another (each waits for the previous to end). B's start wait is its run's
startedAt - createdAt, both stored by the server. A slot frees about every
NODE_SECONDS / 4, so a fair start waits at most about one node run; FIFO would
wait for A's whole backlog (BACKLOG * NODE_SECONDS / 4 s).

Floor (same run, same processes): B's start wait on the idle system, before A
queues anything.
"""

from __future__ import annotations

import asyncio
import os
import time

from bench.support import bench_stack, figure_line, median, ms, signed_in_user

BACKLOG = 1000
SAMPLES = 8
NODE_SECONDS = 0.5
WORKER_RUNS = 4


def wait_graph(seconds: float) -> dict:
    from tests.graph_builders import link, node

    return {
        "name": f"wait {seconds}",
        "nodes": [
            node("wait", "Wait", input="x", seconds=seconds),
            node("out", "AgentOutput", name="o"),
        ],
        "links": [link("wait", "output", "out", "value")],
    }


async def start_wait(gql, user, graph_id: str) -> float:
    from app.models import Execution
    from tests.execution_helpers import execute

    run = await execute(gql, user, graph_id)
    deadline = time.monotonic() + 600
    while True:
        row = await Execution.get(id=run["id"])
        if row.status in ("COMPLETED", "FAILED", "TERMINATED"):
            assert row.started_at is not None, row.status
            return (row.started_at - row.created_at).total_seconds()
        assert time.monotonic() < deadline, "B's run never ended"
        await asyncio.sleep(0.05)


async def main() -> None:
    from app.models import Execution
    from tests.execution_helpers import execute
    from tests.graph_builders import create_graph
    from tests.harness import GraphQLClient

    # Seen by the API and the worker alike (both read the environment).
    os.environ["WORKER_MAX_RUNS"] = str(WORKER_RUNS)
    os.environ["STARTING_CREDITS"] = str(BACKLOG * 2)
    os.environ["MUTATION_RATE_LIMIT_PER_MINUTE"] = str(BACKLOG * 10)
    async with bench_stack(start_worker=True) as stack:
        gql = GraphQLClient(stack.server.base_url)
        try:
            a, b = await signed_in_user(gql), await signed_in_user(gql)
            graph_a = (await create_graph(gql, a, wait_graph(NODE_SECONDS)))["id"]
            graph_b = (await create_graph(gql, b, wait_graph(NODE_SECONDS)))["id"]
            floor = [await start_wait(gql, b, graph_b) for _ in range(SAMPLES)]

            for first in range(0, BACKLOG, 25):
                await asyncio.gather(
                    *(execute(gql, a, graph_a) for _ in range(min(25, BACKLOG - first)))
                )
            deadline = time.monotonic() + 120
            while await Execution.filter(user_id=a.id, status="RUNNING").count() < WORKER_RUNS:
                assert time.monotonic() < deadline, "A's runs never filled the worker"
                await asyncio.sleep(0.05)
            loaded = [await start_wait(gql, b, graph_b) for _ in range(SAMPLES)]
            a_started = await Execution.filter(user_id=a.id).exclude(started_at=None).count()
        finally:
            await gql.aclose()

    value, base = median(loaded), median(floor)
    print(f"B's start wait, {SAMPLES} runs each; one node run is {NODE_SECONDS} s")
    print(f"  idle system (floor): {', '.join(ms(s) for s in floor)}")
    print(f"  behind A's {BACKLOG} queued runs: {', '.join(ms(s) for s in loaded)}")
    print(f"  A's runs started meanwhile: {a_started} of {BACKLOG}")
    print(
        f"fair_start_wait: median {ms(value)}, worst {ms(max(loaded))} "
        f"(FIFO would be ~{BACKLOG * NODE_SECONDS / WORKER_RUNS:.0f} s), "
        f"{value / base:.1f}x the floor"
    )
    name = "fair_start_wait_behind_backlog"
    print(figure_line(name, value * 1000, "ms", base * 1000, value / base))


if __name__ == "__main__":
    asyncio.run(main())
