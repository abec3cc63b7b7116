"""The arq job that runs one graph execution (one job per root execution).

A job runs its execution only while it holds the execution's runner lock
(workers/engine/ownership.py): a second copy of the job (its lease lapsed while
the first worker stalled) waits for the lock and then finds the run ended or
resumes it, never runs it alongside.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Coroutine
from typing import Any

from arq import Retry
from arq.constants import retry_key_prefix

from app import log_context
from app.models import Execution, ExecutionStatus
from app.services.execution_family import descendant_ids
from app.services.executions import stop_requested_key
from app.services.run_slots import RunSlots
from app.transactions import finish_even_if_cancelled
from workers.engine.context import EngineContext
from workers.engine.credit_budget import CreditBudget
from workers.engine.graph_run import GraphRun
from workers.engine.limits import RunBudget, RunLimitReached
from workers.engine.ownership import Fence, LostOwnership

log = logging.getLogger(__name__)

# A run holds its job on a short lease (workers/lease.py): if the worker dies,
# another worker picks the job up within LEASE_SECONDS and resumes the execution.
# An error outside any block (the database or Redis failing a write) does not end
# the run: the job runs again later and resumes, like after a crash. Both spend
# the job's RUN_MAX_TRIES tries (the run lane's arq max_tries; a graceful hand-over
# at a worker's shutdown gives its try back); the last try ends
# the execution FAILED without running it: a run that kills its worker (out of
# memory, say) would be killed on its last try too, and once arq refused it
# another it would stay RUNNING for good, holding one of its user's slots.
RETRY_MAX_SECONDS = 30
# How often a run checks whether stopExecution asked it to stop (§7: within 2 s).
STOP_POLL_SECONDS = 0.25
INTERNAL_ERROR = "Internal error: the run could not go on"
OUT_OF_TRIES = (
    "Internal error: the run was given up after {} tries, each ended by its worker dying "
    "or an error"
)


async def run_execution(ctx: dict[str, Any], execution_id: str) -> str:
    try:
        return await _take_and_run(ctx, execution_id)
    except asyncio.CancelledError:
        # Its worker is shutting down (a stop or a lost lock ends inside): arq
        # puts the job back and has counted the try, but a hand-over (a rolling
        # deploy) is no failure. Only deaths and errors spend RUN_MAX_TRIES.
        with contextlib.suppress(Exception):
            await ctx["redis"].decr(retry_key_prefix + ctx["job_id"])
        raise


async def _take_and_run(ctx: dict[str, Any], execution_id: str) -> str:
    log_context.start(execution_id=execution_id)
    engine: EngineContext = ctx["engine"]
    slots = RunSlots(engine.settings, engine.redis)
    # A run not yet started starts only once it is given one of its user's slots
    # and no other user is owed one first (app/services/run_slots.py); else this
    # job ends here, holding no worker, and the run waits QUEUED for a later job.
    try:
        admission = await slots.admit(uuid.UUID(execution_id))
    except Exception:
        # The database is away: the job runs again later, like after any error.
        log.warning("execution %s: admission failed", execution_id, exc_info=True)
        raise Retry(defer=min(RETRY_MAX_SECONDS, 2 ** (ctx.get("job_try", 1) - 1))) from None
    if not admission.go:
        await slots.nudge(admission.next_fair)
        return "waiting"
    # A free slot of another worker may take the next run. Not awaited: finding
    # that run is a query this run's first event need not wait for (the nudge
    # is best effort, and every run's end and the sweep promote again).
    _in_background(slots.nudge())
    owned = False
    try:
        async with engine.locks.hold(uuid.UUID(execution_id), engine.store.claim) as fence:
            if fence is None:
                return "missing"
            owned = True
            ended = await _run_owned(ctx, engine, fence)
    except LostOwnership:
        log.warning("execution %s was taken over by another runner; stopping", execution_id)
        return "superseded"
    except Exception:
        if owned:
            raise
        # Taking the run failed (the database away, SQLite locked): try again later.
        # A job failed here stayed failed, its run QUEUED, and arq keeps the failed
        # job's result (and so refuses the sweep's re-enqueue) for an hour.
        job_try = ctx.get("job_try", 1)
        defer = min(RETRY_MAX_SECONDS, 2 ** (job_try - 1))
        log.warning(
            "execution %s could not be taken; again in %s s", execution_id, defer, exc_info=True
        )
        raise Retry(defer=defer) from None
    # Its slot is free: the run owed it goes first.
    await slots.nudge()
    return ended


# Background nudges still going; a task nothing refers to may be collected.
_NUDGES: set[asyncio.Task] = set()


def _in_background(nudge: Coroutine[Any, Any, None]) -> None:
    task = asyncio.create_task(nudge)
    _NUDGES.add(task)
    task.add_done_callback(_NUDGES.discard)


async def _new_run(engine: EngineContext, fence: Fence) -> GraphRun:
    execution = await Execution.get(id=fence.root_id)
    family = await descendant_ids(execution.id)
    used = await engine.store.row_count(family)
    budget = RunBudget(engine.settings.MAX_NODE_RUNS_PER_EXECUTION, used)
    credits = None
    if execution.max_credits is not None:
        credits = await CreditBudget.restore(execution.max_credits, family)
    return GraphRun(engine, execution, fence, budget=budget, credit_budget=credits)


async def _run_owned(ctx: dict[str, Any], engine: EngineContext, fence: Fence) -> str:
    execution_id = fence.root_id
    run: GraphRun | None = None
    try:
        run = await _new_run(engine, fence)
        log_context.bind(user_id=run.execution.user_id)  # type: ignore[attr-defined]
        tries = engine.settings.RUN_MAX_TRIES
        if ctx.get("job_try", 1) >= tries:
            log.error("execution %s: its last try; it ends FAILED without running", execution_id)
            await run.terminate(ExecutionStatus.FAILED, OUT_OF_TRIES.format(tries - 1))
            return str(ExecutionStatus.FAILED)
        return await _run(engine, run)
    except (LostOwnership, Retry):
        raise
    except RunLimitReached as limit:
        log.warning("execution %s: %s", execution_id, limit)
        # The same run object: it knows which nodes it cancelled (they pay their seconds).
        assert run is not None
        await finish_even_if_cancelled(run.terminate(ExecutionStatus.FAILED, str(limit)))
        return str(ExecutionStatus.FAILED)
    except Exception:
        job_try = ctx.get("job_try", 1)
        if job_try >= engine.settings.RUN_MAX_TRIES:
            # Even ending it unrun failed (above): one more go, then arq gives up.
            log.exception("execution %s failed on its last try; it ends FAILED", execution_id)
            ending = run or await _new_run(engine, fence)
            await ending.terminate(ExecutionStatus.FAILED, INTERNAL_ERROR)
            return str(ExecutionStatus.FAILED)
        defer = min(RETRY_MAX_SECONDS, 2 ** (job_try - 1))
        log.warning(
            "execution %s hit an error; resuming in %s s", execution_id, defer, exc_info=True
        )
        raise Retry(defer=defer) from None


async def _run(engine: EngineContext, run: GraphRun) -> str:
    execution = run.execution
    if await _stop_requested(engine, execution.id):
        # Stopped while no worker ran it (queued, or its worker died): end it, never resume it.
        await run.terminate()
        return "TERMINATED"
    if execution.status == ExecutionStatus.REVIEW and not await _readmitted(engine, run):
        return "waiting"
    task = asyncio.current_task()
    assert task is not None
    watch = asyncio.create_task(_cancel_when_stopped(engine, run, task))
    try:
        log.info("running execution %s (%s)", execution.id, execution.status)
        status = await run.run()
        if status == ExecutionStatus.REVIEW and await _stop_requested(engine, execution.id):
            # Stopped just as it began to wait (stopExecution saw it still running).
            await finish_even_if_cancelled(run.terminate())
            return "TERMINATED"
        log.info("execution %s ended %s", execution.id, status)
        return str(status)
    except asyncio.CancelledError:
        if run.fence.lost.is_set():
            # Our lock went with its connection: give the job back to be resumed by
            # whoever holds the lock next (maybe this worker, reconnected).
            task.uncancel()
            raise Retry(defer=1) from None
        if await _stop_requested(engine, execution.id):
            # stopExecution: end the run here, as TERMINATED.
            task.uncancel()
            await finish_even_if_cancelled(run.terminate())
            return "TERMINATED"
        raise  # the worker is shutting down: the job runs again elsewhere and resumes
    finally:
        watch.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watch


async def _readmitted(engine: EngineContext, run: GraphRun) -> bool:
    """A run resuming after review gave its slot back when it paused: it takes one
    again (under its user's cap, in fair order) or waits in REVIEW, its job ending,
    to be promoted when a slot frees. Decided here, holding the run's lock, so a
    run pausing just as a decision's job arrives is admitted all the same."""
    if run.ancestors:
        return True
    slots = RunSlots(engine.settings, engine.redis)
    admission = await slots.admit(run.execution.id, resuming=True)
    if not admission.go:
        await slots.nudge(admission.next_fair)
    return admission.go


async def _stop_requested(engine: EngineContext, execution_id: uuid.UUID) -> bool:
    return bool(await engine.redis.exists(stop_requested_key(engine.settings, execution_id)))


async def _cancel_when_stopped(
    engine: EngineContext, run: GraphRun, run_task: asyncio.Task
) -> None:
    """Cancels the run once stopExecution sets its flag (unless it is already
    writing its end: cancelling that could lose its last event), or at once when
    its runner lock is lost. A flag in Redis rather than arq's abort: an abort that
    reaches no running job (its worker just died) makes arq drop the job
    unstarted, which would leave the execution RUNNING."""
    execution_id = run.execution.id
    while not run.fence.lost.is_set():
        if await _stop_requested(engine, execution_id):
            if run.finishing:
                return
            break
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STOP_POLL_SECONDS):  # not wait_for (wakeup.py)
                await run.fence.lost.wait()
    run_task.cancel()
