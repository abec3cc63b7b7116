"""Engine overhead per node: a chain of 100 StoreValue nodes run by a real worker.

AgentInput -> StoreValue x100 -> AgentOutput, started with executeGraph over
HTTP and run by an `agentgraph worker` process. For each run:

    overhead per node = (execution wall time - sum of block run times) / nodes

where the wall time is the execution's startedAt -> endedAt (stored by the
worker, so queue pick-up is left out and shown apart) and the block run times
are the blocks re-run here on the inputs each node had. Target: <= 5 ms.
StoreValue's output is static, so createGraph makes every link out of it
static: each step also records the value on the execution (static_inputs),
as a real StoreValue chain does.

Baseline (same run, same database, sampled between the runs): one INSERT +
UPDATE round trip, the least any engine step that records a state change can cost.
"""

from __future__ import annotations

import asyncio

from bench.support import (
    bench_stack,
    block_run_seconds,
    figure_line,
    median,
    ms,
    round_trip_baseline,
    seconds_between,
    signed_in_user,
    wait_until_ended,
)

CHAIN = 100
WARMUP, RUNS = 2, 10
TARGET_SECONDS = 0.005


def chain_graph() -> dict:
    from tests.graph_builders import link, node

    nodes = [node("in", "AgentInput", name="value", type="integer")]
    nodes += [node(f"s{i}", "StoreValue") for i in range(CHAIN)]
    nodes.append(node("out", "AgentOutput", name="result"))
    links = [link("in", "result", "s0", "input")]
    links += [link(f"s{i}", "output", f"s{i + 1}", "input") for i in range(CHAIN - 1)]
    links.append(link(f"s{CHAIN - 1}", "output", "out", "value"))
    return {"name": "store-value chain", "nodes": nodes, "links": links}


async def main() -> None:
    from tests.execution_helpers import GET_EXECUTION, execute
    from tests.graph_builders import create_graph
    from tests.harness import GraphQLClient

    async with (
        bench_stack(start_worker=True) as stack,
        round_trip_baseline(stack.database_url) as round_trips,
    ):
        gql = GraphQLClient(stack.server.base_url)
        try:
            user = await signed_in_user(gql)
            graph = await create_graph(gql, user, chain_graph())
            per_node, walls, blocks, recorded, pickups, counts = [], [], [], [], [], []
            for index in range(WARMUP + RUNS):
                started = await execute(gql, user, graph["id"], {"value": index})
                status = await wait_until_ended(gql, user, started["id"])
                assert status == "COMPLETED", status
                data = await gql.ok(GET_EXECUTION, {"id": started["id"]}, token=user.token)
                execution = data["execution"]
                assert execution["outputs"] == {"result": [index]}, execution["outputs"]
                if index < WARMUP:
                    continue
                nodes = execution["nodeExecutions"]
                wall = seconds_between(execution["startedAt"], execution["endedAt"])
                block = await block_run_seconds(nodes)
                per_node.append((wall - block) / len(nodes))
                walls.append(wall)
                blocks.append(block)
                recorded.append(execution["stats"]["nodeRunSeconds"])
                pickups.append(seconds_between(execution["createdAt"], execution["startedAt"]))
                counts.append(len(nodes))
                await round_trips.sample()
        finally:
            await gql.aclose()
        baseline = round_trips.median()

    overhead = median(per_node)
    print(f"engine overhead: {CHAIN} StoreValue nodes in a chain ({counts[0]} nodes), {RUNS} runs")
    print(f"  execution wall time: p50 {ms(median(walls))} (min {ms(min(walls))})")
    print(f"  sum of block run times: p50 {ms(median(blocks))}")
    print(f"  node run time the engine records (RUNNING..end): p50 {ms(median(recorded))}")
    print(f"  queue pick-up (createdAt -> startedAt): p50 {ms(median(pickups))}")
    print(f"  per node: {', '.join(ms(value) for value in per_node)}")
    print(f"  INSERT + UPDATE round trip baseline: p50 {ms(baseline)}")
    verdict = "meets" if overhead <= TARGET_SECONDS else "misses"
    print(
        f"engine_overhead: {ms(overhead)} per node ({verdict} the {ms(TARGET_SECONDS)} target), "
        f"{overhead / baseline:.1f}x an INSERT + UPDATE round trip"
    )
    print(
        figure_line(
            "engine_overhead_per_node", overhead * 1000, "ms", baseline * 1000, overhead / baseline
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
