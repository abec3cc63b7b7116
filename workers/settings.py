"""The arq worker: which functions and cron jobs it runs, and the connections it owns."""

from __future__ import annotations

import logging
from typing import Any

from arq import cron, func
from tortoise import Tortoise

from app.clients.redis import arq_health_check_key, arq_queue_name, arq_redis_settings
from app.events import EventPublisher
from app.services.auto_top_up import QueuedAutoTopUp
from app.settings import get_settings, tortoise_config
from workers.engine.context import EngineContext
from workers.jobs.auto_top_up import auto_top_up
from workers.jobs.executions import RUN_MAX_TRIES, run_execution
from workers.jobs.files import delete_expired_files
from workers.jobs.maintenance import prune_processed_stripe_events, prune_trigger_deliveries
from workers.jobs.schedules import start_scheduler, stop_scheduler
from workers.lease import leased

log = logging.getLogger(__name__)


async def startup(ctx: dict[str, Any]) -> None:
    settings = get_settings()
    settings.check_secrets()
    await Tortoise.init(config=tortoise_config(settings.DATABASE_URL), _enable_global_fallback=True)
    ctx["settings"] = settings
    ctx["engine"] = EngineContext(
        settings=settings,
        redis=ctx["redis"],
        publisher=EventPublisher(ctx["redis"], settings.REDIS_PREFIX),
        auto_top_up=QueuedAutoTopUp(ctx["redis"]),
    )
    # Every worker runs the scheduler unless told not to (a worker kept for
    # one kind of job); the database claim makes several of them safe.
    ctx["scheduler"] = start_scheduler(ctx["engine"]) if settings.SCHEDULER_ENABLED else None
    log.info("worker started on queue %s", arq_queue_name(settings))


async def shutdown(ctx: dict[str, Any]) -> None:
    await stop_scheduler(ctx.get("scheduler"))
    await Tortoise.close_connections()
    log.info("worker stopped")


def worker_settings() -> type:
    """arq's WorkerSettings, built from the current Settings (queue names carry the prefix)."""
    settings = get_settings()

    class WorkerSettings:
        functions = [
            # Long runs are fine: liveness comes from the job's lease, not a timeout.
            func(
                leased(run_execution), timeout=24 * 3600, max_tries=RUN_MAX_TRIES, keep_result=3600
            ),
            # keep_result=0: a later drop below the threshold can ask again.
            func(leased(auto_top_up), timeout=120, keep_result=0),
            func(leased(prune_processed_stripe_events)),
            func(leased(prune_trigger_deliveries)),
        ]
        cron_jobs = [
            cron(
                leased(prune_processed_stripe_events),
                hour={3},
                minute={17},
                unique=True,
                run_at_startup=False,
            ),
            cron(
                leased(prune_trigger_deliveries),
                hour={3},
                minute={29},
                unique=True,
                run_at_startup=False,
            ),
            # Read URLs stop working at expiry by themselves; this reclaims the space.
            cron(
                leased(delete_expired_files),
                minute=set(range(0, 60, 10)),
                unique=True,
                run_at_startup=True,
                timeout=600,
            ),
        ]
        on_startup = startup
        on_shutdown = shutdown
        redis_settings = arq_redis_settings(settings)
        queue_name = arq_queue_name(settings)
        health_check_key = arq_health_check_key(settings)
        # arq looks for new jobs every 0.5 s by default, which was almost all of
        # the executeGraph -> first event latency; a queue read costs ~0.1 ms.
        poll_delay = 0.05
        handle_signals = True

    return WorkerSettings
