"""Redis connections and the names of every key this project writes."""

from __future__ import annotations

import logging
from typing import Any

from arq import ArqRedis
from arq.connections import RedisSettings
from arq.jobs import Job
from redis.asyncio import ConnectionPool
from redis.exceptions import RedisError

from app.settings import Settings

log = logging.getLogger(__name__)


class WakingArqRedis(ArqRedis):
    """arq's client, whose every enqueue of a job due now also publishes a
    wake-up on the queue's channel: idle workers start it at once instead of at
    their next queue poll (workers/wakeup.py). The poll stays the fallback, so a
    lost wake-up only costs WORKER_POLL_SECONDS."""

    async def enqueue_job(self, function: str, *args: Any, **kwargs: Any) -> Job | None:
        job = await super().enqueue_job(function, *args, **kwargs)
        deferred = kwargs.get("_defer_until") or kwargs.get("_defer_by")
        if job is not None and not deferred:
            await wake_workers(self, kwargs.get("_queue_name") or self.default_queue_name)
        return job


async def wake_workers(redis: ArqRedis, queue_name: str) -> None:
    """Tells `queue_name`'s idle workers to poll now: after an enqueue, or after a
    queued job was made due earlier (moved to the front). Best effort: the job is
    queued, and the timed poll finds it."""
    try:
        await redis.publish(worker_wakeup_channel(queue_name), b"")
    except RedisError:
        log.warning("worker wake-up not published", exc_info=True)


def create_redis(settings: Settings) -> ArqRedis:
    """One client for everything (arq's is a redis.asyncio.Redis that can also
    enqueue, and wakes workers when it does). It connects on first use, so a
    process starts while Redis is down and /health reports it."""
    return WakingArqRedis(
        connection_pool=ConnectionPool.from_url(settings.REDIS_URL),
        default_queue_name=arq_queue_name(settings),
    )


def worker_wakeup_channel(queue_name: str) -> str:
    """Pub/sub channel announcing that a job is due now on `queue_name` (which
    carries REDIS_PREFIX)."""
    return f"{queue_name}:wake"


def arq_queue_name(settings: Settings) -> str:
    return f"{settings.REDIS_PREFIX}arq:queue"


def arq_mail_queue_name(settings: Settings) -> str:
    """Notification mail has a queue of its own (workers/mail_lane.py)."""
    return f"{settings.REDIS_PREFIX}arq:mail-queue"


def arq_run_queue_name(settings: Settings) -> str:
    """Graph runs have a queue of their own (workers/run_lane.py), WORKER_MAX_RUNS a worker."""
    return f"{settings.REDIS_PREFIX}arq:run-queue"


def arq_run_health_check_key(settings: Settings) -> str:
    return f"{settings.REDIS_PREFIX}arq:run-health-check"


def arq_mail_health_check_key(settings: Settings) -> str:
    return f"{settings.REDIS_PREFIX}arq:mail-health-check"


def arq_health_check_key(settings: Settings) -> str:
    return f"{settings.REDIS_PREFIX}arq:health-check"


def arq_job_id(settings: Settings, kind: str, ident: object) -> str:
    """A job id that carries REDIS_PREFIX. arq names a job's keys from fixed
    prefixes plus its id (`arq:job:<id>`, `arq:in-progress:<id>`, `arq:result:<id>`,
    `arq:retry:<id>`), so with the prefix in every id two deployments sharing one
    Redis never see (or dedupe against) each other's jobs."""
    return f"{settings.REDIS_PREFIX}{kind}:{ident}"


def arq_redis_settings(settings: Settings) -> RedisSettings:
    return RedisSettings.from_dsn(settings.REDIS_URL)


def metrics_counter_key(settings: Settings) -> str:
    """A hash of counters that workers bump and every API process reports."""
    return f"{settings.REDIS_PREFIX}metrics:counters"
