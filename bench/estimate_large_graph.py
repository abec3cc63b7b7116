"""`estimateExecution` at the graph size limit, latency over HTTP:

- a dense graph: 1,000 Wait nodes, each linked to the next five (4,985 links);
- 1,000 AgentInput nodes of one name, run with a 900 KB input.

Both used to take seconds of the API's event loop (a walk from every node to
find loops; the input serialised once per node to size BYTE costs no block had).

Baseline (same run, same database): reading the graph's nodes and links with
raw SQL through asyncpg, plus serialising the run input once, the floor of any
estimate of it.
"""

from __future__ import annotations

import asyncio
import json
import uuid

import asyncpg
import httpx

from bench.support import bench_stack, figure_line, median, ms, percentile, timed

NODES, FAN_OUT = 1000, 5
INPUT_BYTES = 900_000
QUERY = """query($id: ID!, $inputs: JSON!) { estimateExecution(graphId: $id, inputs: $inputs) {
  minCredits maxCredits nodes { nodeId minCredits } } }"""
RUNS = 10


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
        wait, agent_input = str(block_by_name("Wait").id), str(block_by_name("AgentInput").id)
        dense_nodes = [
            NodeSpec(id=f"w{i}", block_id=wait, input_default={"seconds": 0}) for i in range(NODES)
        ]
        dense_links = [
            LinkSpec(f"w{i}", f"w{j}", "output", "input")
            for i in range(NODES)
            for j in range(i + 1, min(NODES, i + 1 + FAN_OUT))
        ]
        dense = await graphs.create_graph(
            settings, user_id, GraphSpec("dense", dense_nodes, dense_links), None
        )
        input_nodes = [
            NodeSpec(
                id=f"i{i}", block_id=agent_input, input_default={"name": "t", "type": "string"}
            )
            for i in range(NODES)
        ]
        inputs = await graphs.create_graph(
            settings, user_id, GraphSpec("inputs", input_nodes, []), None
        )
        token = issue_jwt(settings, user_id, "b@example.com")
        big_input = {"t": "x" * INPUT_BYTES}
        cases = [("dense", dense, {}), ("big_input", inputs, big_input)]

        results = {}
        async with httpx.AsyncClient(base_url=stack.server.base_url, timeout=120) as client:
            conn = await asyncpg.connect(stack.database_url.split("?")[0])
            try:
                for name, graph, run_inputs in cases:

                    async def request(graph=graph, run_inputs=run_inputs):
                        response = await client.post(
                            "/graphql",
                            json={
                                "query": QUERY,
                                "variables": {"id": str(graph.graph_id), "inputs": run_inputs},
                            },
                            headers={"Authorization": f"Bearer {token}"},
                        )
                        body = response.json()
                        assert "errors" not in body, body
                        assert len(body["data"]["estimateExecution"]["nodes"]) == NODES

                    async def raw(graph=graph, run_inputs=run_inputs):
                        await conn.fetch("SELECT * FROM graph_nodes WHERE graph_id = $1", graph.id)
                        await conn.fetch("SELECT * FROM graph_links WHERE graph_id = $1", graph.id)
                        json.dumps(run_inputs)

                    results[name] = (await timed(request, RUNS, 1), await timed(raw, RUNS, 1))
            finally:
                await conn.close()

    for name, (api, baseline) in results.items():
        print(f"estimateExecution, {name}: {NODES} nodes")
        print(f"  API over HTTP: p50 {ms(median(api))}, p95 {ms(percentile(api, 95))}")
        print(f"  raw SQL + one serialisation of the input: p50 {ms(median(baseline))}")
        print(
            figure_line(
                f"estimate_{name}_p50",
                median(api) * 1000,
                "ms",
                median(baseline) * 1000,
                median(api) / median(baseline),
            )
        )


if __name__ == "__main__":
    asyncio.run(main())
