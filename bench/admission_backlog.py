"""Deciding who is owed the next run slot (`RunSlots.next_fair`, the query every
admission runs under the admission lock and every executeGraph runs to promote)
with 100,000 runs of one user QUEUED, 25 of theirs running, and 20 other users'
runs waiting: latency in process. Also `queue_positions` of that user's newest
100 queued runs (a page of `executions { queuePosition }`).

Baseline (same run, same database): the INSERT + UPDATE round trip of one row
(bench/support.py), the cost of any engine step.
"""

from __future__ import annotations

import asyncio
import uuid

import asyncpg

from bench.support import (
    bench_stack,
    figure_line,
    median,
    ms,
    percentile,
    round_trip_baseline,
    timed,
)

BACKLOG, RUNS = 100_000, 30


async def main() -> None:
    from app.models import Execution
    from app.principal import Principal
    from app.services.run_slots import RunSlots, queue_positions
    from app.services.users import get_or_create_user
    from app.settings import get_settings

    async with bench_stack(start_api=False) as stack:
        settings = get_settings()
        users = [uuid.uuid4() for _ in range(21)]
        for number, user_id in enumerate(users):
            await get_or_create_user(settings, Principal(user_id=user_id, email=f"{number}@b.com"))
        slots = RunSlots(settings, None)  # type: ignore[arg-type]  # next_fair reads the database only
        conn = await asyncpg.connect(stack.database_url.split("?")[0])
        try:
            insert = (
                "INSERT INTO executions (id, graph_id, graph_version, status, inputs, "
                "credentials_inputs, outputs, created_at, static_inputs, is_deleted, user_id, "
                "run_queue, admitted_at) SELECT gen_random_uuid(), gen_random_uuid(), 1, $1, "
                "'{}', '{}', '{}', now() - g * interval '1 ms', '{}', false, $2, $3, $4 "
                "FROM generate_series(1, $5) g"
            )
            await conn.execute(insert, "QUEUED", users[0], slots.queue, None, BACKLOG)
            await conn.execute(insert, "RUNNING", users[0], slots.queue, None, 25)
            for user_id in users[1:]:
                await conn.execute(insert, "QUEUED", user_id, slots.queue, None, 1)
            await conn.execute("ANALYZE executions")
        finally:
            await conn.close()

        async def decide():
            assert await slots.next_fair() is not None

        samples = await timed(decide, RUNS)
        page = (
            await Execution.filter(user_id=users[0], status="QUEUED")
            .order_by("-created_at")
            .limit(100)
            .values_list("id", flat=True)
        )

        async def place():
            assert len(await queue_positions(page)) == 100

        places = await timed(place, RUNS)
        async with round_trip_baseline(stack.database_url) as baseline:
            await baseline.sample(RUNS)
            floor = baseline.median()

    print(f"next fair run, {BACKLOG:,} runs of one user queued, 20 other users waiting")
    print(f"  p50 {ms(median(samples))}, p95 {ms(percentile(samples, 95))}")
    print(f"  queuePosition of a page of 100: p50 {ms(median(places))}")
    print(f"  INSERT + UPDATE round trip baseline: p50 {ms(floor)}")
    print(
        figure_line(
            "admission_backlog_p50",
            median(samples) * 1000,
            "ms",
            floor * 1000,
            median(samples) / floor,
        )
    )

    print(
        figure_line(
            "queue_positions_backlog_p50",
            median(places) * 1000,
            "ms",
            floor * 1000,
            median(places) / floor,
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
