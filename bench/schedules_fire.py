"""How many due schedules one worker fires per second.

SCHEDULES schedules of USERS users become due at the same moment (their stored
next run is set to now, as the clock would); one `agentgraph worker` fires
them: for each, a transaction that locks the row, runs executeGraph as the
owner (graph, balance, input check, execution row, onboarding counters),
advances the next run, commits, then publishes the QUEUED event and enqueues
the run. The same worker also runs the graphs it starts (one StoreValue node
each), as it would in production.

The rate is taken from the firing times the worker stored (`last_run_at`,
first to last), so the poll interval before the first one does not count.
Baseline (same run, same database): one INSERT + UPDATE round trip per
second, the cheapest durable state change (bench/support.py).
"""

from __future__ import annotations

import asyncio
import time
import uuid

from bench.support import bench_stack, figure_line, ms, round_trip_baseline

SCHEDULES = 300
# Owners of the schedules: firings of one owner queue on their onboarding row.
USERS = 30
YEARLY = "0 0 1 1 *"


async def main() -> None:
    from app.blocks.registry import block_by_name
    from app.clock import utcnow
    from app.models import Execution, Schedule
    from app.principal import Principal
    from app.services import graphs, schedules
    from app.services.graph_validation import GraphSpec, NodeSpec
    from app.services.users import get_or_create_user
    from app.settings import get_settings

    async with bench_stack(start_api=False, start_worker=True) as stack:
        settings = get_settings()
        store = str(block_by_name("StoreValue").id)
        spec = GraphSpec(
            "tick", [NodeSpec(id="store", block_id=store, input_default={"data": 1})], []
        )
        ids, graph_ids = [], []
        for owner in range(USERS):
            user_id = uuid.uuid4()
            await get_or_create_user(settings, Principal(user_id=user_id, email=f"s{owner}@x.test"))
            graph = await graphs.create_graph(settings, user_id, spec, None)
            graph_ids.append(graph.graph_id)
            for index in range(SCHEDULES // USERS):
                row = await schedules.create_schedule(
                    settings,
                    user_id,
                    schedules.ScheduleSpec(str(graph.graph_id), None, f"s{index}", YEARLY),
                )
                ids.append(row.id)

        made_due = utcnow()
        await Schedule.filter(id__in=ids).update(next_run_at=made_due)
        deadline = time.monotonic() + 600
        while await Schedule.filter(id__in=ids, last_run_at=None).exists():
            if time.monotonic() > deadline:
                raise TimeoutError("schedules still unfired")
            await asyncio.sleep(0.2)
        fired_at = sorted(await Schedule.filter(id__in=ids).values_list("last_run_at", flat=True))
        executions = await Execution.filter(graph_id__in=graph_ids).count()
        assert executions == SCHEDULES, executions
        span = (fired_at[-1] - fired_at[0]).total_seconds()
        rate = (SCHEDULES - 1) / span
        first_delay = (fired_at[0] - made_due).total_seconds()

        async with round_trip_baseline(stack.database_url) as baseline:
            await baseline.sample(200)
            baseline_seconds = baseline.median()
        baseline_rate = 1 / baseline_seconds

    print(f"{SCHEDULES} schedules of {USERS} users due at once, one worker")
    print(f"  first fired {first_delay:.2f} s after becoming due (poll interval 1 s)")
    print(f"  all fired in {span:.2f} s: {rate:.1f} schedules/s, {ms(span / (SCHEDULES - 1))} each")
    print(f"  baseline: INSERT + UPDATE round trip {ms(baseline_seconds)}, {baseline_rate:.0f}/s")
    print(figure_line("schedules_fired_per_s", rate, "/s", baseline_rate, rate / baseline_rate))


if __name__ == "__main__":
    asyncio.run(main())
