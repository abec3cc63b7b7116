"""`graphs` with 50 graphs x 20 nodes: what building it costs, and what a
repeated request costs once it is cached (issue 14).

- graphs_query_cpu: CPU seconds of one uncached request in process (our schema,
  request gate, resolvers and SQL, the cache turned off), median of RUNS, with
  the garbage collector settled as the API process settles it after start-up
  (app.main.settle_garbage_collector): unsettled, a full collection walked
  this process's whole heap every few requests of either side (~100 ms each).
  Baseline (same run, same process): graphql-core executing the same document
  over a minimal schema of the same shape, resolving from plain dicts (the
  result's own data): the least any GraphQL layer on this stack spends.
- graphs_query_cached_p50: the same request over HTTP, repeated with nothing
  changed, answered from the per-user response cache, until its body is in
  (not parsed: that is the client's cost). httpx asks for gzip as browsers
  do, so a hit arrives compressed and is inflated here, in the time.
  Baseline (same run, interleaved): `{ __typename }` over HTTP, signed in.
- graphs_query_raw_sql: the storage floor, shown apart: three raw SQL
  statements through asyncpg fetching the same rows.
"""

from __future__ import annotations

import asyncio
import gc
import os
import time
import uuid

import asyncpg
import httpx

from bench.support import bench_stack, figure_line, median, ms, percentile, timed

GRAPHS, NODES = 50, 20
QUERY = """{ graphs(first: 50) { totalCount edges { node { id name
  nodes { id blockId inputDefault block { id } } links { id sourceId sinkId } } } } }"""
RUNS = 40
CPU_RUNS = 10
FLOOR_SDL = """
scalar JSON
type Query { graphs(first: Int): GraphConnection }
type GraphConnection { totalCount: Int edges: [GraphEdge] }
type GraphEdge { node: Graph }
type Graph { id: ID name: String nodes: [Node] links: [Link] }
type Node { id: ID blockId: String inputDefault: JSON block: Block }
type Block { id: ID }
type Link { id: ID sourceId: ID sinkId: ID }
"""


async def cpu_per_call(call, runs: int) -> float:
    samples = []
    for _ in range(runs):
        started = time.process_time()
        await call()
        samples.append(time.process_time() - started)
    return median(samples)


async def main() -> None:
    from graphql import build_schema, execute, parse

    from app.auth import issue_jwt
    from app.blocks.registry import block_by_name
    from app.main import settle_garbage_collector
    from app.principal import Principal
    from app.services import graphs
    from app.services.graph_validation import GraphSpec, LinkSpec, NodeSpec
    from app.services.users import get_or_create_user
    from app.settings import get_settings
    from tests.in_process import schema_runner

    # This process measures the uncached path; the API caches (its own setting).
    os.environ["GRAPHS_CACHE_SECONDS"] = "0"
    async with bench_stack(api_env={"GRAPHS_CACHE_SECONDS": "600"}) as stack:
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

        async with schema_runner() as run:
            result = await run(QUERY, user_id)
            assert result.errors is None, result.errors
            data = result.data
            thresholds = gc.get_threshold()
            settle_garbage_collector(settings)  # as the server, after its start-up

            async def ours():
                assert (await run(QUERY, user_id)).errors is None

            floor_schema, document = build_schema(FLOOR_SDL), parse(QUERY)

            async def floor():
                assert execute(floor_schema, document, root_value=data).errors is None

            ours_cpu, floor_cpu = [], []
            for _ in range(3):  # interleaved, so both see the same load
                ours_cpu.append(await cpu_per_call(ours, CPU_RUNS))
                floor_cpu.append(await cpu_per_call(floor, CPU_RUNS))
            ours_cpu_s, floor_cpu_s = median(ours_cpu), median(floor_cpu)
            gc.unfreeze()  # the HTTP client below runs as it did
            gc.set_threshold(*thresholds)

        statements = await count_statements(user_id)

        async with httpx.AsyncClient(base_url=stack.server.base_url, timeout=30) as client:

            async def post(query: str):
                response = await client.post(
                    "/graphql", json={"query": query}, headers={"Authorization": f"Bearer {token}"}
                )
                # The body is read, not parsed: decoding 300 KB of JSON is the
                # client's cost (~5 ms in Python), the same whoever answers.
                assert response.status_code == 200 and b'"errors"' not in response.content
                return response

            await post(QUERY)  # the miss that fills the cache
            cached, typename = [], []
            for _ in range(4):
                cached += await timed(lambda: post(QUERY), RUNS // 4)
                typename += await timed(lambda: post("{ __typename }"), RUNS // 4)
            outcome = (await post(QUERY)).headers.get("x-graphs-cache") or "not cached"

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

    cached_p50, typename_p50 = median(cached), median(typename)
    print(f"graphs query, {GRAPHS} graphs x {NODES} nodes")
    print(
        f"  uncached, in process: {ms(ours_cpu_s)} CPU a request ({statements} SQL statements); "
        f"graphql-core from plain dicts: {ms(floor_cpu_s)} ({ours_cpu_s / floor_cpu_s:.2f}x)"
    )
    print(
        f"  repeated over HTTP ({outcome}): p50 {ms(cached_p50)}, "
        f"p95 {ms(percentile(cached, 95))}; "
        f"{{ __typename }}: p50 {ms(typename_p50)} ({cached_p50 / typename_p50:.2f}x)"
    )
    print(f"  raw SQL (3 statements): p50 {ms(median(baseline))}")
    print(
        figure_line(
            "graphs_query_cpu",
            ours_cpu_s * 1000,
            "ms",
            floor_cpu_s * 1000,
            ours_cpu_s / floor_cpu_s,
        )
    )
    print(
        figure_line(
            "graphs_query_cached_p50",
            cached_p50 * 1000,
            "ms",
            typename_p50 * 1000,
            cached_p50 / typename_p50,
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
