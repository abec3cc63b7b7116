"""The arq worker: which functions and cron jobs it runs, and the connections it owns."""

from __future__ import annotations

import logging
from typing import Any

from arq import cron, func
from tortoise import Tortoise

from app.clients.redis import arq_health_check_key, arq_queue_name, arq_redis_settings
from app.events import EventPublisher
from app.services.auto_top_up import QueuedAutoTopUp
from app.services.blocks import BLOCK_RUN_SECONDS, EXECUTE_BLOCK_JOB
from app.services.notifications import Notifier
from app.settings import get_settings, tortoise_config
from workers.engine.context import EngineContext
from workers.engine.ownership import PostgresRunnerLocks, RunnerLocks
from workers.engine.store import RunStore
from workers.engine.store_postgres import PostgresRunStore
from workers.jobs.auto_top_up import auto_top_up
from workers.jobs.blocks import execute_block
from workers.jobs.files import delete_expired_files
from workers.jobs.maintenance import prune_processed_stripe_events, prune_trigger_deliveries
from workers.jobs.notifications import create_daily_summaries, sweep_notification_mail
from workers.jobs.reviews import EXPIRE_REVIEWS_JOB, expire_due_reviews
from workers.jobs.schedules import start_scheduler, stop_scheduler
from workers.jobs.sweeps import start_sweeps, stop_sweeps
from workers.lanes import stop_lane
from workers.lease import leased
from workers.mail_lane import mail_functions, start_mail_lane
from workers.run_lane import run_function, start_run_lane

log = logging.getLogger(__name__)


async def startup(ctx: dict[str, Any]) -> None:
    settings = get_settings()
    settings.check_secrets()
    config = tortoise_config(settings.DATABASE_URL)
    await Tortoise.init(config=config, _enable_global_fallback=True)
    ctx["settings"] = settings
    connection = config["connections"]["default"]
    on_postgres = isinstance(connection, dict)
    ctx["notifier"] = notifier = Notifier(settings, ctx["redis"])
    ctx["engine"] = EngineContext(
        settings=settings,
        redis=ctx["redis"],
        publisher=EventPublisher(ctx["redis"], settings.REDIS_PREFIX),
        auto_top_up=QueuedAutoTopUp(ctx["redis"], settings, notifier),
        # One statement per step on PostgreSQL; the ORM elsewhere (SQLite for make dev).
        store=PostgresRunStore() if on_postgres else RunStore(),
        # One runner per execution across workers needs PostgreSQL's session locks;
        # SQLite (make dev) has one worker.
        locks=(PostgresRunnerLocks(connection["credentials"]) if on_postgres else RunnerLocks()),
        notifier=notifier,
    )
    ctx["sweeps"] = start_sweeps(ctx["engine"])
    # Every worker runs the scheduler unless told not to (a worker kept for
    # one kind of job); the database claim makes several of them safe.
    ctx["scheduler"] = start_scheduler(ctx["engine"]) if settings.SCHEDULER_ENABLED else None
    ctx["mail_lane"] = start_mail_lane(settings)
    ctx["run_lane"] = start_run_lane(ctx["engine"])
    log.info("worker started on queue %s", arq_queue_name(settings))


async def shutdown(ctx: dict[str, Any]) -> None:
    await stop_lane(ctx.get("run_lane"))
    await stop_lane(ctx.get("mail_lane"))
    await stop_scheduler(ctx.get("scheduler"))
    await stop_sweeps(ctx.get("sweeps"))
    if "engine" in ctx:
        await ctx["engine"].locks.close()
    await Tortoise.close_connections()
    log.info("worker stopped")


def worker_settings() -> type:
    """arq's WorkerSettings, built from the current Settings (queue names carry the prefix)."""
    settings = get_settings()

    class WorkerSettings:
        functions = [
            # Runs have a queue of their own (workers/run_lane.py); here for jobs queued
            # by processes from before it.
            run_function(settings),
            # keep_result=0: a later drop below the threshold can ask again.
            func(leased(auto_top_up), timeout=120, keep_result=0),
            func(leased(prune_processed_stripe_events)),
            # Its API caller waits for the result; one try (a repeat would run the block
            # again after the caller gave up).
            func(
                leased(execute_block),
                name=EXECUTE_BLOCK_JOB,
                timeout=BLOCK_RUN_SECONDS + 10,
                max_tries=1,
                keep_result=120,
            ),
            *mail_functions(),
            func(leased(create_daily_summaries), timeout=600),
            func(leased(sweep_notification_mail), timeout=120),
            func(leased(prune_trigger_deliveries)),
            func(leased(expire_due_reviews), name=EXPIRE_REVIEWS_JOB, timeout=300),
        ]
        # Cron job ids carry the prefix too (arq makes them from the name), so two
        # deployments on one Redis each run their own.
        cron_jobs = [
            cron(
                leased(prune_processed_stripe_events),
                name=f"{settings.REDIS_PREFIX}cron:prune_processed_stripe_events",
                hour={3},
                minute={17},
                unique=True,
                run_at_startup=False,
            ),
            cron(
                leased(prune_trigger_deliveries),
                name=f"{settings.REDIS_PREFIX}cron:prune_trigger_deliveries",
                hour={3},
                minute={29},
                unique=True,
                run_at_startup=False,
            ),
            # Read URLs stop working at expiry by themselves; this reclaims the space.
            cron(
                leased(delete_expired_files),
                name=f"{settings.REDIS_PREFIX}cron:delete_expired_files",
                minute=set(range(0, 60, 10)),
                unique=True,
                run_at_startup=True,
                timeout=600,
            ),
            # Each user's previous day is summed up after their midnight.
            cron(
                leased(create_daily_summaries),
                name=f"{settings.REDIS_PREFIX}cron:create_daily_summaries",
                minute={7},
                unique=True,
                run_at_startup=False,
                timeout=600,
            ),
            cron(
                leased(sweep_notification_mail),
                name=f"{settings.REDIS_PREFIX}cron:sweep_notification_mail",
                minute=set(range(3, 60, 5)),
                unique=True,
                run_at_startup=True,
                timeout=120,
            ),
            # Unanswered reviews end as rejected, within a minute of their expiry.
            cron(
                leased(expire_due_reviews),
                name=f"{settings.REDIS_PREFIX}cron:expire_reviews",
                second={41},
                unique=True,
                run_at_startup=False,
                timeout=300,
            ),
        ]
        on_startup = startup
        on_shutdown = shutdown
        redis_settings = arq_redis_settings(settings)
        queue_name = arq_queue_name(settings)
        health_check_key = arq_health_check_key(settings)
        # Only the fallback: enqueues wake the worker at once (workers/wakeup.py).
        poll_delay = settings.WORKER_POLL_SECONDS
        handle_signals = True

    return WorkerSettings
