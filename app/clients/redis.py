"""Redis connections and the names of every key this project writes."""

from __future__ import annotations

from arq import ArqRedis
from arq.connections import RedisSettings
from redis.asyncio import ConnectionPool

from app.settings import Settings


def create_redis(settings: Settings) -> ArqRedis:
    """One client for everything (arq's is a redis.asyncio.Redis that can also
    enqueue). It connects on first use, so a process starts while Redis is
    down and /health reports it."""
    return ArqRedis(
        connection_pool=ConnectionPool.from_url(settings.REDIS_URL),
        default_queue_name=arq_queue_name(settings),
    )


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
