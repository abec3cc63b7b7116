"""`graphs` with 50 graphs x 20 nodes: latency over HTTP and SQL queries per request.

Baseline (same run, same database): fetching the same rows with three raw SQL
statements through asyncpg, the storage floor of this query.
"""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import httpx

from bench.support import bench_stack, figure_line, median, ms, percentile, timed

GRAPHS, NODES = 50, 20
QUERY = """{ graphs(first: 50) { totalCount edges { node { id name
  nodes { id blockId inputDefault block { id } } links { id sourceId sinkId } } } } }"""
RUNS = 40


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
        store = str(block_by_name("StoreValue").id)
        for index in range(GRAPHS):
            nodes = [
                NodeSpec(id=f"n{i}", block_id=store, input_default={"data": i})
                for i in range(NODES)
            ]
            links = [LinkSpec(f"n{i}", f"n{i + 1}", "output", "input") for i in range(NODES - 1)]
            await graphs.create_graph(settings, user_id, GraphSpec(f"g{index}", nodes, links), None)
        token = issue_jwt(settings, user_id, "b@example.com")

        async with httpx.AsyncClient(base_url=stack.server.base_url, timeout=30) as client:

            async def request():
                response = await client.post(
                    "/graphql",
                    json={"query": QUERY},
                    headers={"Authorization": f"Bearer {token}"},
                )
                body = response.json()
                assert "errors" not in body, body
                assert len(body["data"]["graphs"]["edges"]) == GRAPHS

            api = await timed(request, RUNS)

        statements = await count_statements(user_id)

        dsn = stack.database_url.split("?")[0]
        conn = await asyncpg.connect(dsn)
        try:

            async def raw():
                rows = await conn.fetch(
                    "SELECT id, graph_id, name FROM graphs WHERE user_id = $1 AND is_active "
                    "ORDER BY created_at DESC LIMIT 50",
                    user_id,
                )
                ids = [r["id"] for r in rows]
                await conn.fetch("SELECT * FROM graph_nodes WHERE graph_id = ANY($1)", ids)
                await conn.fetch("SELECT * FROM graph_links WHERE graph_id = ANY($1)", ids)

            baseline = await timed(raw, RUNS)
        finally:
            await conn.close()

    print(f"graphs query, {GRAPHS} graphs x {NODES} nodes, {RUNS} requests")
    print(f"  API over HTTP: p50 {ms(median(api))}, p95 {ms(percentile(api, 95))}")
    print(f"  raw SQL baseline (3 statements): p50 {ms(median(baseline))}")
    print(f"  SQL statements per request: {statements}")
    print(
        f"graphs_query: p50 {ms(median(api))}, {statements} SQL queries, "
        f"{median(api) / median(baseline):.1f}x the raw-SQL baseline"
    )
    print(
        figure_line(
            "graphs_query_p50",
            median(api) * 1000,
            "ms",
            median(baseline) * 1000,
            median(api) / median(baseline),
        )
    )


async def count_statements(user_id) -> int:
    """Run the same query in this process with the SQL client instrumented."""
    from tortoise.backends.asyncpg.client import AsyncpgDBClient

    from tests.in_process import schema_runner

    seen: list[str] = []
    originals = {}
    for name in ("execute_query", "execute_query_dict"):
        originals[name] = getattr(AsyncpgDBClient, name)

        def wrapped(self, query, values=None, _original=originals[name]):
            seen.append(query)
            return _original(self, query, values)

        setattr(AsyncpgDBClient, name, wrapped)
    try:
        async with schema_runner() as run:
            await run(QUERY, user_id)
            seen.clear()
            result = await run(QUERY, user_id)
            assert result.errors is None, result.errors
    finally:
        for name, original in originals.items():
            setattr(AsyncpgDBClient, name, original)
    return len(seen)


if __name__ == "__main__":
    asyncio.run(main())
