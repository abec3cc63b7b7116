"""Graph executions as users drive them: start, stop, read, delete (§7).

The running itself happens in the workers (workers/engine); this module
stores what they need, enqueues the job, and reads what they wrote.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
from arq import ArqRedis

from app.blocks.registry import get_block
from app.clients.redis import arq_job_id, arq_run_queue_name, metrics_counter_key
from app.clock import utcnow
from app.errors import AppError, ErrorCode, bad_input, not_found
from app.events import EventPublisher
from app.models import (
    TERMINAL_STATUSES,
    Execution,
    ExecutionStatus,
    GraphSource,
    Node,
    NodeExecution,
)
from app.services import ledger, onboarding, run_requests
from app.services.execution_outputs import with_current_outputs
from app.services.graph_validation import Validation, parse_uuid
from app.services.graphs import validation_error
from app.services.pagination import check_page_size, encode_cursor, rows_after
from app.services.run_slots import RUN_EXECUTION_JOB, RunSlots
from app.services.run_slots import run_job_id as run_job_id
from app.settings import Settings

log = logging.getLogger(__name__)

MAX_EXECUTIONS_PAGE = 100
_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "number": (int, float),
    "integer": (int,),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
    "file": (str,),
}


def check_run_inputs(settings: Settings, nodes: list[Node], inputs: dict[str, Any]) -> Validation:
    """The run's inputs against the graph's AgentInput nodes, and its blocks
    against what this server can run now (a block may have been disabled)."""
    result = Validation()
    declared: set[str] = set()
    for node in nodes:
        block = get_block(node.block_id)
        node_id = str(node.id)
        if block is None:
            result.add(node_id, "blockId", "this block no longer exists")
            continue
        if block.is_disabled(settings):
            result.add(node_id, "blockId", f"{block.name} is disabled on this server")
        if block.name != "AgentInput":
            continue
        defaults = node.input_default or {}
        name = defaults.get("name")
        if not isinstance(name, str):
            continue
        declared.add(name)
        value = inputs.get(name, defaults.get("value"))
        if value is None:
            result.add(node_id, "value", f"input {name!r} is required")
            continue
        kind = defaults.get("type", "any")
        expected = _JSON_TYPES.get(kind)
        if expected and (
            not isinstance(value, expected)
            or (isinstance(value, bool) and kind in ("number", "integer"))
        ):
            result.add(node_id, "value", f"input {name!r} must be of type {kind}")
    unknown = sorted(set(inputs) - declared)
    if unknown and result.valid:
        result.message = f"Unknown input(s): {', '.join(unknown)}"
    return result


async def execute_graph(
    settings: Settings,
    arq: ArqRedis,
    publisher: EventPublisher,
    user_id: uuid.UUID,
    graph_id: str,
    version: int | None,
    inputs: Any,
    credentials_inputs: Any,
    source: GraphSource | None,
    preset_id: str | None = None,
    node_inputs: dict[str, dict[str, Any]] | None = None,
    max_credits: int | None = None,
) -> Execution:
    if max_credits is not None and max_credits <= 0:
        raise bad_input("maxCredits must be a positive number of credits", field="maxCredits")
    # Presets, library agents and stored credentials (issue 16): app/services/run_requests.py.
    request = await run_requests.prepare(
        user_id, graph_id, version, inputs, credentials_inputs, preset_id
    )
    graph, inputs, credentials_inputs = request.graph, request.inputs, request.credentials_inputs
    if await ledger.get_balance(user_id) <= 0:
        raise AppError(ErrorCode.INSUFFICIENT_CREDITS, "Insufficient credits to start a run")
    nodes = await Node.filter(graph_id=graph.id)
    validation = check_run_inputs(settings, nodes, inputs)
    await run_requests.check_credentials(settings, user_id, request, nodes, validation)
    if not validation.valid:
        raise validation_error(validation)

    execution = await Execution.create(
        id=uuid.uuid4(),
        user_id=user_id,
        graph_id=graph.graph_id,
        graph_version=graph.version,
        status=ExecutionStatus.QUEUED,
        source=source,
        inputs=inputs,
        credentials_inputs=credentials_inputs,
        node_inputs=node_inputs,
        max_credits=max_credits,
        run_queue=arq_run_queue_name(settings),
    )
    await publish_status(publisher, execution)
    slots = RunSlots(settings, arq)
    await slots.enqueue(execution.id)
    try:
        # Ahead of a backlog of other users' jobs when it is owed the next slot.
        await slots.nudge()
        await onboarding.record_run(settings, user_id, graph.graph_id, source)
        await run_requests.record_run(user_id, graph.graph_id)
    except Exception:
        # The run is stored and queued: answering an error now would have the
        # client start it again. Bookkeeping is not worth a second run.
        log.exception("run %s started, but recording it for onboarding failed", execution.id)
    return execution


async def enqueue_run(settings: Settings, arq: ArqRedis, execution_id: uuid.UUID) -> bool:
    """One job per execution, its id made from the execution id: arq runs it once,
    and again only to resume (or to start it once it is owed a slot). False when
    the job was already there."""
    return await RunSlots(settings, arq).enqueue(execution_id)


async def enqueue_resume(
    settings: Settings, arq: ArqRedis, execution_id: uuid.UUID, reason: str
) -> bool:
    """Another job for a run that no worker holds (it waits for a person, §7 human
    review): its own id per `reason`, since the run's first job id stays taken while
    arq keeps its result. Only the runner holding the execution's lock runs it.
    It resumes once it takes a run slot again (it gave its slot back when it paused;
    app/services/run_slots.py): at its user's cap, it waits in REVIEW to be promoted."""
    job = await arq.enqueue_job(
        RUN_EXECUTION_JOB,
        str(execution_id),
        _job_id=arq_job_id(settings, "run", f"{execution_id}:{reason}"),
        _queue_name=arq_run_queue_name(settings),
    )
    return job is not None


# A run whose job never reached the queue (its process died, or Redis failed,
# between storing the row and enqueueing) is still QUEUED after this long;
# enqueueing it again is safe: the job id follows from the execution id.
STRANDED_AFTER = timedelta(minutes=1)
STRANDED_LOOKBACK = timedelta(days=1)


async def requeue_stranded_runs(
    settings: Settings, arq: ArqRedis, now: datetime, limit: int = 100
) -> int:
    """Enqueues runs (of any source) left QUEUED without a job; returns how many were
    new. Sub-graph runs are left alone: their parent's job runs them; so are runs
    waiting for a slot of a user at the cap (a slot that frees promotes them)."""
    return await RunSlots(settings, arq).requeue_stranded(
        now - STRANDED_AFTER, now - STRANDED_LOOKBACK, limit
    )


def execution_snapshot(execution: Execution) -> dict[str, Any]:
    """What a status event carries: the execution's own fields, JSON-ready."""
    return {
        "id": str(execution.id),
        "userId": str(execution.user_id),  # type: ignore[attr-defined]
        "graphId": str(execution.graph_id),
        "graphVersion": execution.graph_version,
        "status": str(execution.status),
        "inputs": execution.inputs,
        "outputs": execution.outputs,
        "createdAt": execution.created_at.isoformat(),
        "startedAt": execution.started_at.isoformat() if execution.started_at else None,
        "endedAt": execution.ended_at.isoformat() if execution.ended_at else None,
        "stats": execution.stats,
        "error": execution.error,
        "shareToken": str(execution.share_token) if execution.share_token else None,
        "source": str(execution.source) if execution.source else None,
        "maxCredits": execution.max_credits,
        "parentExecutionId": (
            str(execution.parent_execution_id)  # type: ignore[attr-defined]
            if execution.parent_execution_id  # type: ignore[attr-defined]
            else None
        ),
    }


def node_execution_snapshot(node_execution: NodeExecution) -> dict[str, Any]:
    return {
        "id": str(node_execution.id),
        "nodeId": str(node_execution.node_id),
        "blockId": str(node_execution.block_id),
        "status": str(node_execution.status),
        "inputData": node_execution.input_data,
        "outputData": node_execution.output_data,
        "queuedAt": _iso(node_execution.queued_at),
        "startedAt": _iso(node_execution.started_at),
        "endedAt": _iso(node_execution.ended_at),
        "error": node_execution.error,
    }


def _iso(value) -> str | None:
    return value.isoformat() if value else None


def status_event(execution: Execution) -> dict[str, Any]:
    """The event that announces an execution's status: its snapshot."""
    return {"kind": "execution", "execution": execution_snapshot(execution)}


async def publish_status(publisher: EventPublisher, execution: Execution) -> int:
    return await publisher.publish(
        execution.id,
        status_event(execution),
        graph_id=execution.graph_id,
        terminal=execution.status in TERMINAL_STATUSES,
    )


async def publish_status_on(publisher: EventPublisher, pipeline: Any, execution: Execution) -> None:
    """publish_status, queued on a Redis pipeline the caller executes."""
    await publisher.publish_on(
        pipeline,
        execution.id,
        orjson.dumps(status_event(execution), default=str),
        graph_id=execution.graph_id,
        terminal=execution.status in TERMINAL_STATUSES,
    )


async def get_execution(user_id: uuid.UUID, execution_id: str) -> Execution | None:
    parsed = parse_uuid(execution_id)
    if parsed is None:
        return None
    execution = await Execution.get_or_none(id=parsed, user_id=user_id, is_deleted=False)
    if execution is not None:
        await with_current_outputs([execution])
    return execution


@dataclass
class ExecutionPage:
    executions: list[Execution]
    total: int
    has_next: bool

    @staticmethod
    def cursor(execution: Execution) -> str:
        return encode_cursor(execution.created_at, execution.id)


async def list_executions(
    user_id: uuid.UUID,
    graph_id: str | None,
    statuses: list[ExecutionStatus] | None,
    first: int,
    after: str | None,
) -> ExecutionPage:
    """The user's top-level executions (sub-graph runs show inside their parent), newest first."""
    check_page_size(first, MAX_EXECUTIONS_PAGE)
    base = Execution.filter(user_id=user_id, is_deleted=False, parent_execution_id=None)
    if graph_id is not None:
        parsed = parse_uuid(graph_id)
        if parsed is None:
            return ExecutionPage([], 0, False)
        base = base.filter(graph_id=parsed)
    if statuses:
        base = base.filter(status__in=list(statuses))
    query = base
    if after:
        query = query.filter(rows_after(after))
    rows = await query.order_by("-created_at", "-id").limit(first + 1)
    page = await with_current_outputs(rows[:first])
    return ExecutionPage(page, await base.count(), len(rows) > first)


def stop_requested_key(settings: Settings, execution_id: uuid.UUID) -> str:
    return f"{settings.REDIS_PREFIX}exec:{execution_id}:stop"


async def stop_execution(
    settings: Settings,
    arq: ArqRedis,
    publisher: EventPublisher,
    user_id: uuid.UUID,
    execution_id: str,
) -> Execution | None:
    """Queued: never starts. Running: the worker cancels its node tasks and ends it
    TERMINATED. Waiting for review: a job ends it TERMINATED, its reviews cancelled.
    Returns the execution, or None when it had already ended."""
    execution = await get_execution(user_id, execution_id)
    if execution is None:
        raise not_found("Execution")
    if execution.status in TERMINAL_STATUSES:
        return None
    # A sub-graph run is part of its parent's job: stopping it stops the whole
    # run it belongs to (its root), which terminates every child too.
    root = execution
    while root.parent_execution_id is not None:  # type: ignore[attr-defined]
        root = await Execution.get(id=root.parent_execution_id)  # type: ignore[attr-defined]
    # The worker running it watches this flag and cancels the run; a worker that
    # picks the job up later (queued, or resumed after a crash) ends it at once.
    await arq.set(stop_requested_key(settings, root.id), b"1", ex=86400)
    now = utcnow()
    stopped_before_start = await Execution.filter(id=root.id, status=ExecutionStatus.QUEUED).update(
        status=ExecutionStatus.TERMINATED, ended_at=now
    )
    await root.refresh_from_db()  # after the flag: a run pausing later sees the flag itself
    if root.status == ExecutionStatus.REVIEW:
        # No worker holds a run that waits for review: a job ends it (it sees the flag).
        await enqueue_resume(settings, arq, root.id, f"stop:{uuid.uuid4()}")
    if stopped_before_start:
        await root.refresh_from_db()
        await publish_status(publisher, root)
        # No worker ends it, so /metrics counts it here (workers count the rest).
        await arq.hincrby(metrics_counter_key(settings), f"executions|{root.status}", 1)
        # It may have held a slot (admitted, not yet started): the next run is owed it.
        await RunSlots(settings, arq).nudge()
    await _wait_until_ended(execution)
    return execution


async def _wait_until_ended(execution: Execution, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        await execution.refresh_from_db()
        if execution.status in TERMINAL_STATUSES:
            return
        await asyncio.sleep(0.05)


async def delete_execution(
    settings: Settings,
    arq: ArqRedis,
    publisher: EventPublisher,
    user_id: uuid.UUID,
    execution_id: str,
) -> uuid.UUID:
    """Stops it if it runs, then hides it everywhere."""
    execution = await get_execution(user_id, execution_id)
    if execution is None:
        raise not_found("Execution")
    if execution.status not in TERMINAL_STATUSES:
        await stop_execution(settings, arq, publisher, user_id, execution_id)
    await Execution.filter(id=execution.id).update(is_deleted=True, share_token=None)
    return execution.id


async def node_executions(
    execution_ids: list[uuid.UUID], at_most: int
) -> dict[uuid.UUID, list[NodeExecution]]:
    """In arrival order; past `at_most` together QUERY_TOO_COMPLEX (read to one row past)."""
    query = NodeExecution.filter(execution_id__in=execution_ids).exclude(
        status=ExecutionStatus.INCOMPLETE
    )
    rows = await query.order_by("arrival").limit(at_most + 1)
    if len(rows) > at_most:
        message = f"More than {at_most} node executions together; ask for fewer executions"
        raise AppError(ErrorCode.QUERY_TOO_COMPLEX, message)
    grouped: dict[uuid.UUID, list[NodeExecution]] = {eid: [] for eid in execution_ids}
    for row in rows:
        grouped[row.execution_id].append(row)  # type: ignore[attr-defined]
    return grouped
