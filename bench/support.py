"""What every benchmark needs: its own database, Redis prefix and API process,
and a way to time things. Run a benchmark with `python -m bench.<name>`."""

from __future__ import annotations

import os
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

PG_ADMIN_DSN = os.environ.get("BENCH_PG_ADMIN_DSN", "postgres://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


@dataclass
class Stack:
    env: dict[str, str]
    server: object  # tests.harness.ApiServer
    database_url: str


def bench_env(run_id: str) -> dict[str, str]:
    database = f"agentgraph_bench_{run_id}"
    return {
        "ENVIRONMENT": "production",
        "DATABASE_URL": PG_ADMIN_DSN.rsplit("/", 1)[0] + f"/{database}?maxsize=20",
        "REDIS_URL": REDIS_URL,
        "REDIS_PREFIX": f"agentgraph-bench-{run_id}:",
        "JWT_SECRET": f"bench-secret-{run_id}-0123456789abcdef",
        "API_KEY_PEPPER": f"bench-pepper-{run_id}",
        "LOG_LEVEL": "WARNING",
    }


@asynccontextmanager
async def bench_stack(start_api: bool = True) -> AsyncIterator[Stack]:
    """A fresh PostgreSQL database (migrated), a Redis prefix and an API process;
    the benchmark process's ORM is connected too. Everything is removed after."""
    run_id = uuid.uuid4().hex[:10]
    env = bench_env(run_id)
    os.environ.update(env)
    from tortoise import Tortoise

    from app.schema_migrations import apply_migrations
    from app.settings import get_settings, tortoise_config
    from tests.harness import ApiServer, create_database, drop_database, drop_redis_prefix

    get_settings.cache_clear()
    database = f"agentgraph_bench_{run_id}"
    await create_database(PG_ADMIN_DSN, database)
    server = ApiServer(env) if start_api else None
    try:
        await apply_migrations(env["DATABASE_URL"])
        await Tortoise.init(
            config=tortoise_config(env["DATABASE_URL"]), _enable_global_fallback=True
        )
        if server:
            await server.start()
        yield Stack(env=env, server=server, database_url=env["DATABASE_URL"])
    finally:
        if server:
            await server.stop()
        await Tortoise.close_connections()
        await drop_database(PG_ADMIN_DSN, database)
        await drop_redis_prefix(REDIS_URL, env["REDIS_PREFIX"])


async def timed(fn: Callable[[], Awaitable[object]], runs: int, warmup: int = 3) -> list[float]:
    """Seconds per call, after a few warm-up calls."""
    for _ in range(warmup):
        await fn()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        await fn()
        samples.append(time.perf_counter() - started)
    return samples


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def median(samples: list[float]) -> float:
    return statistics.median(samples)
