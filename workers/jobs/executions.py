"""The arq job that runs one graph execution (its job id is the execution id)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any

from arq.constants import in_progress_key_prefix

from app.models import Execution
from app.services.executions import stop_requested_key
from workers.engine.context import EngineContext
from workers.engine.graph_run import GraphRun

log = logging.getLogger(__name__)

# arq marks a running job with an in-progress key that lives for the job timeout.
# A run holds it on a short lease instead, renewed while this worker is alive:
# if the worker dies, the key lapses within LEASE_SECONDS and another worker
# picks the job up again and resumes the execution.
LEASE_SECONDS = 10
LEASE_RENEW_SECONDS = 3


async def run_execution(ctx: dict[str, Any], execution_id: str) -> str:
    engine: EngineContext = ctx["engine"]
    execution = await Execution.get_or_none(id=uuid.UUID(execution_id))
    if execution is None:
        return "missing"
    lease = asyncio.create_task(_hold_lease(ctx, ctx.get("job_id") or execution_id))
    run = GraphRun(engine, execution)
    try:
        status = await run.run()
        return str(status)
    except asyncio.CancelledError:
        if await engine.redis.exists(stop_requested_key(engine.settings, execution.id)):
            # stopExecution aborted the job: end the run here, as TERMINATED.
            await asyncio.shield(run.terminate())
            return "TERMINATED"
        raise  # the worker is shutting down: the job runs again elsewhere and resumes
    finally:
        lease.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await lease


async def _hold_lease(ctx: dict[str, Any], job_id: str) -> None:
    redis = ctx["redis"]
    key = in_progress_key_prefix + job_id
    while True:
        await redis.pexpire(key, LEASE_SECONDS * 1000)
        await asyncio.sleep(LEASE_RENEW_SECONDS)
