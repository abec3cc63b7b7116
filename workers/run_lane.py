"""Graph runs on a queue of their own, worked by an arq Worker inside every worker
process beside the main one, at most WORKER_MAX_RUNS at a time.

A run job may find its run owed to someone else (app/services/run_slots.py) and
end at once; the run queue's order is what hands the next free slot to the run
owed it (promoted jobs go to the front). On the main queue runs shared their
slots with blocks, top-ups and cron jobs, and took them in plain arrival order.
"""

from __future__ import annotations

from arq import func

from app.clients.redis import arq_run_health_check_key, arq_run_queue_name
from app.settings import Settings
from workers.engine.context import EngineContext
from workers.jobs.executions import run_execution
from workers.lanes import Lane, LaneSpec, start_lane
from workers.lease import leased


def run_function(settings: Settings):
    # Long runs are fine: liveness comes from the job's lease, not a timeout. The
    # result is kept so a run's end can be awaited; a run owed a slot later gets a
    # new job all the same (RunSlots.enqueue).
    return func(
        leased(run_execution),
        timeout=24 * 3600,
        max_tries=settings.RUN_MAX_TRIES,
        keep_result=3600,
    )


def start_run_lane(engine: EngineContext) -> Lane:
    settings = engine.settings
    spec = LaneSpec(
        name="run lane",
        functions=[run_function(settings)],
        queue_name=arq_run_queue_name(settings),
        health_check_key=arq_run_health_check_key(settings),
        ctx={"settings": settings, "engine": engine},
        max_jobs=settings.WORKER_MAX_RUNS,
    )
    return start_lane(settings, spec)
