"""The arq job that runs one graph execution (its job id is the execution id)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any

from arq import Retry

from app import log_context
from app.models import Execution, ExecutionStatus
from app.services.executions import stop_requested_key
from workers.engine.context import EngineContext
from workers.engine.graph_run import GraphRun

log = logging.getLogger(__name__)

# A run holds its job on a short lease (workers/lease.py): if the worker dies,
# another worker picks the job up within LEASE_SECONDS and resumes the execution.
# An error outside any block (the database or Redis failing a write) does not end
# the run: the job runs again later and resumes, like after a crash. Both share
# arq's try budget, which must match max_tries of run_execution in workers/settings.py;
# the last try ends the execution FAILED rather than leave it RUNNING.
RUN_MAX_TRIES = 50
RETRY_MAX_SECONDS = 30
# How often a run checks whether stopExecution asked it to stop (§7: within 2 s).
STOP_POLL_SECONDS = 0.5


async def run_execution(ctx: dict[str, Any], execution_id: str) -> str:
    log_context.start(execution_id=execution_id)
    try:
        return await _run(ctx, ctx["engine"], uuid.UUID(execution_id))
    except Exception:
        job_try = ctx.get("job_try", 1)
        if job_try >= RUN_MAX_TRIES:
            log.exception("execution %s failed on its last try; it ends FAILED", execution_id)
            execution = await Execution.get(id=uuid.UUID(execution_id))
            await GraphRun(ctx["engine"], execution).terminate(
                ExecutionStatus.FAILED, "Internal error: the run could not go on"
            )
            return str(ExecutionStatus.FAILED)
        defer = min(RETRY_MAX_SECONDS, 2 ** (job_try - 1))
        log.warning(
            "execution %s hit an error; resuming in %s s", execution_id, defer, exc_info=True
        )
        raise Retry(defer=defer) from None


async def _run(ctx: dict[str, Any], engine: EngineContext, execution_id: uuid.UUID) -> str:
    execution = await Execution.get_or_none(id=execution_id)
    if execution is None:
        return "missing"
    log_context.bind(user_id=execution.user_id)  # type: ignore[attr-defined]
    run = GraphRun(engine, execution)
    if await _stop_requested(engine, execution.id):
        # Stopped while no worker ran it (queued, or its worker died): end it, never resume it.
        await run.terminate()
        return "TERMINATED"
    watch = asyncio.create_task(_cancel_when_stopped(engine, run, asyncio.current_task()))
    try:
        log.info("running execution %s (%s)", execution_id, execution.status)
        status = await run.run()
        log.info("execution %s ended %s", execution_id, status)
        return str(status)
    except asyncio.CancelledError:
        if await _stop_requested(engine, execution.id):
            # stopExecution: end the run here, as TERMINATED.
            asyncio.current_task().uncancel()
            await asyncio.shield(run.terminate())
            return "TERMINATED"
        raise  # the worker is shutting down: the job runs again elsewhere and resumes
    finally:
        watch.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watch


async def _stop_requested(engine: EngineContext, execution_id: uuid.UUID) -> bool:
    return bool(await engine.redis.exists(stop_requested_key(engine.settings, execution_id)))


async def _cancel_when_stopped(
    engine: EngineContext, run: GraphRun, run_task: asyncio.Task
) -> None:
    """Cancels the run once stopExecution sets its flag, unless it is already
    writing its end (cancelling that could lose its last event). A flag in Redis
    rather than arq's abort: an abort that reaches no running job (its worker just
    died) makes arq drop the job unstarted, which would leave the execution RUNNING."""
    execution_id = run.execution.id
    while not await _stop_requested(engine, execution_id):  # noqa: ASYNC110 - the flag is in Redis
        await asyncio.sleep(STOP_POLL_SECONDS)
    if not run.finishing:
        run_task.cancel()
