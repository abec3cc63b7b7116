"""`estimateExecution` of a graph of 20 SubGraph nodes, each running a 50-node graph
(1,020 estimated lines): latency over HTTP.

Baseline (same run, same database): reading the same nodes and links with raw
SQL through asyncpg (the parent's and the child's rows, two statements each), the
storage floor of the estimate.
"""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import httpx

from bench.support import bench_stack, figure_line, median, ms, percentile, timed

CHILD_NODES, SUB_GRAPHS = 50, 20
QUERY = """query($id: ID!) { estimateExecution(graphId: $id) { minCredits maxCredits
  nodes { nodeId blockName minCredits maxCredits } } }"""
RUNS = 30


async def main() -> None:
    from app.auth import issue_jwt
    from app.blocks.registry import block_by_name
    from app.principal import Principal
    from app.services import graphs
    from app.services.graph_validation import GraphSpec, LinkSpec, NodeSpec
    from app.services.users import get_or_create_user
    from app.settings import get_settings

    async with bench_stack() as stack:
        settings = get_settings()
        user_id = uuid.uuid4()
        await get_or_create_user(settings, Principal(user_id=user_id, email="b@example.com"))
        store, wait = str(block_by_name("StoreValue").id), str(block_by_name("Wait").id)
        sub = str(block_by_name("SubGraph").id)
        nodes = [NodeSpec(id="w", block_id=wait, input_default={"input": 0, "seconds": 1})]
        nodes += [
            NodeSpec(id=f"n{i}", block_id=store, input_default={"data": i})
            for i in range(CHILD_NODES - 1)
        ]
        links = [LinkSpec("w", "n0", "output", "input")]
        links += [LinkSpec(f"n{i}", f"n{i + 1}", "output", "input") for i in range(CHILD_NODES - 2)]
        child = await graphs.create_graph(settings, user_id, GraphSpec("child", nodes, links), None)
        parent_nodes = [
            NodeSpec(
                id=f"s{i}",
                block_id=sub,
                input_default={"graph_id": str(child.graph_id), "graph_version": 1, "inputs": {}},
            )
            for i in range(SUB_GRAPHS)
        ]
        parent = await graphs.create_graph(
            settings, user_id, GraphSpec("parent", parent_nodes, []), None
        )
        token = issue_jwt(settings, user_id, "b@example.com")
        lines = SUB_GRAPHS * (CHILD_NODES + 1)

        async with httpx.AsyncClient(base_url=stack.server.base_url, timeout=30) as client:

            async def request():
                response = await client.post(
                    "/graphql",
                    json={"query": QUERY, "variables": {"id": str(parent.graph_id)}},
                    headers={"Authorization": f"Bearer {token}"},
                )
                body = response.json()
                assert "errors" not in body, body
                assert len(body["data"]["estimateExecution"]["nodes"]) == lines

            api = await timed(request, RUNS)

        from app.services.estimates import estimate_execution

        async def service():
            await estimate_execution(settings, user_id, str(parent.graph_id), None, {})

        in_process = await timed(service, RUNS)

        conn = await asyncpg.connect(stack.database_url.split("?")[0])
        try:

            async def raw():
                for graph in (parent, child):
                    await conn.fetch("SELECT * FROM graph_nodes WHERE graph_id = $1", graph.id)
                    await conn.fetch("SELECT * FROM graph_links WHERE graph_id = $1", graph.id)

            baseline = await timed(raw, RUNS)
        finally:
            await conn.close()

    print(f"estimateExecution, {SUB_GRAPHS} sub-graphs x {CHILD_NODES} nodes ({lines} lines)")
    print(f"  API over HTTP: p50 {ms(median(api))}, p95 {ms(percentile(api, 95))}")
    print(f"  the service alone, in process: p50 {ms(median(in_process))}")
    print(f"  raw SQL baseline (4 statements): p50 {ms(median(baseline))}")
    print(
        figure_line(
            "estimate_query_p50",
            median(api) * 1000,
            "ms",
            median(baseline) * 1000,
            median(api) / median(baseline),
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
