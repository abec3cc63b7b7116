"""`blocks`: latency over HTTP, and how often the catalogue is built.

The catalogue is built once per code version and kept in Redis (aiocache) and
in each process's memory, so no request instantiates or describes a block.
Baseline (same run): `{ __typename }` on the same server, the floor of any
GraphQL request here (no resolver, no database, no Redis).
"""

from __future__ import annotations

import asyncio
import uuid

import httpx

from bench.support import bench_stack, figure_line, median, ms, percentile, timed

RUNS = 200
QUERY = "{ blocks { id name categories inputSchema outputSchema costs { amount type } } }"


async def main() -> None:
    from app.auth import issue_jwt
    from app.services.blocks import BlockCatalog
    from app.settings import get_settings

    async with bench_stack() as stack:
        settings = get_settings()
        token = issue_jwt(settings, uuid.uuid4(), "b@example.com")
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=stack.server.base_url, timeout=30) as client:
            first = await client.post("/graphql", json={"query": QUERY}, headers=headers)
            count = len(first.json()["data"]["blocks"])

            async def blocks():
                response = await client.post("/graphql", json={"query": QUERY}, headers=headers)
                assert len(response.json()["data"]["blocks"]) == count

            async def typename():
                await client.post("/graphql", json={"query": "{ __typename }"}, headers=headers)

            api = await timed(blocks, RUNS)
            floor = await timed(typename, RUNS)
        # A second process's catalogue finds the shared copy: it builds nothing.
        catalog = BlockCatalog(settings)
        await catalog.descriptors()
        builds_elsewhere = catalog.computed
        await catalog.aclose()

    print(f"blocks query ({count} blocks), {RUNS} requests")
    print(f"  blocks: p50 {ms(median(api))}, p99 {ms(percentile(api, 99))}")
    print(f"  {{ __typename }} floor: p50 {ms(median(floor))}")
    print(f"  catalogue builds by a second process after the first request: {builds_elsewhere}")
    print(
        f"blocks_query: p50 {ms(median(api))}, {median(api) / median(floor):.2f}x the "
        f"__typename floor, {builds_elsewhere} rebuilds"
    )
    print(
        figure_line(
            "blocks_query_p50",
            median(api) * 1000,
            "ms",
            median(floor) * 1000,
            median(api) / median(floor),
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
