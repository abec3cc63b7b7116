"""Ending a run together with every sub-graph run below it (a stop, a run limit,
a last failed try): the whole family at once, whatever its size.

The root's node tasks are cancelled first (a cancelled SubGraph node cancels its
child's run, and so on down), so every node that was running has noted how far
it got. Then, with a number of statements that does not grow with the family:
the seconds the stopped nodes ran are charged in one ledger transaction; every
unfinished node execution of every run ends TERMINATED in one statement; holds
and pending reviews of the family are dropped; the sub-graph runs end in one
statement; and all of their events go out in one Redis round trip, each run's
node events before its own end, the runs deepest below first. The root ends
last, through the run's usual end (GraphRun.finish).
"""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from typing import Any, Protocol

from app.clock import utcnow
from app.events import EventReader
from app.models import TERMINAL_STATUSES, Execution, ExecutionStatus, NodeExecution
from app.services import ledger
from app.services import reviews as review_service
from app.services.execution_family import FamilyMember, family_of
from app.services.execution_outputs import outputs_by_execution
from app.services.executions import node_execution_snapshot, publish_status_on
from workers.engine.rows import node_event
from workers.engine.stats import family_stats
from workers.engine.store import UNFINISHED, EndedRow, dumps


class GraphRun(Protocol):
    """What ending a family needs of its root run (graph_run.GraphRun)."""

    engine: Any
    execution: Execution
    fence: Any
    store: Any
    charger: Any
    cancelled: dict[uuid.UUID, Any]
    children: dict[uuid.UUID, GraphRun]

    async def cancel_tasks(self) -> None: ...

    async def finish(self, status: ExecutionStatus, error: str | None) -> ExecutionStatus: ...


Kept = dict[uuid.UUID, tuple[dict, int]]


async def end_family(run: GraphRun, status: ExecutionStatus, error: str) -> None:
    """`run` (a root run) and every unfinished run below it end `status` with
    `error`; their unfinished nodes end TERMINATED, each with its event."""
    await run.cancel_tasks()
    family = await family_of(run.execution.id)
    # Set before the first write: a try that finds it knows an earlier one may
    # have written ends that it never announced.
    marker = f"{run.engine.settings.REDIS_PREFIX}exec:{run.execution.id}:ending"
    earlier_try = bool(await run.engine.redis.get(marker))
    await _announce_missed_ends(run, family, earlier_try)
    open_members = [m for m in family if m.status not in TERMINAL_STATUSES]
    if not any(m.id == run.execution.id for m in open_members):
        return  # it ended meanwhile (its own end, or another stop)
    open_ids = [m.id for m in open_members]
    await run.engine.redis.set(marker, b"1", ex=86400)
    now = utcnow()
    kept = await _charge_stopped_nodes(run)
    ended_rows = await run.store.end_unfinished(run.fence, open_ids, UNFINISHED, now, kept)
    await ledger.release_execution_reservations(open_ids)
    reviews = await review_service.cancel_pending(open_ids, now)
    children = [m for m in open_members if m.id != run.execution.id]
    ended_children = await _end_children(run, children, family, status, error, now)
    await _announce(run, open_members, ended_rows, reviews, ended_children)
    await run.finish(status, error)


async def _announce_missed_ends(
    run: GraphRun, family: list[FamilyMember], earlier_try: bool
) -> None:
    """What an earlier try of this end wrote but never announced (its worker died
    between the two): the ends of runs whose stream does not end with them, and,
    after an earlier try, the nodes it ended in runs still open. Events a client
    already had come again, unchanged."""
    ended = [m.id for m in family if m.status in TERMINAL_STATUSES]
    reader = EventReader(run.engine.redis, run.engine.settings.REDIS_PREFIX)
    missed = await reader.unended(ended) if ended else []
    still_open = [m.id for m in family if m.id not in ended] if earlier_try else []
    if not missed and not still_open:
        return
    rows = await NodeExecution.filter(
        execution_id__in=[*missed, *still_open], status=ExecutionStatus.TERMINATED
    ).order_by("arrival")
    ended_rows = [
        EndedRow(row.execution_id, dumps(node_execution_snapshot(row)).encode(), False)  # type: ignore[attr-defined]
        for row in rows
    ]
    depth = {m.id: len(m.ancestors) for m in family}
    executions = sorted(await Execution.filter(id__in=missed), key=lambda e: -depth[e.id])
    await _announce(run, family, ended_rows, [], executions)


def _runs_in_memory(run: GraphRun) -> list[GraphRun]:
    """The run and the sub-graph runs this worker holds below it."""
    found, frontier = [], [run]
    while frontier:
        found.extend(frontier)
        frontier = [child for parent in frontier for child in parent.children.values()]
    return found


async def _charge_stopped_nodes(run: GraphRun) -> Kept:
    """Nodes the stop cancelled pay for the seconds they ran (one transaction for
    all of them) and keep what they had yielded; returns that, by node execution."""
    kept: Kept = {}
    charges, progress_by_key = [], {}
    for each in _runs_in_memory(run):
        for row_id, progress in each.cancelled.items():
            kept[row_id] = (progress.outputs, progress.charged)
            if progress.started is None:
                continue  # it never started, or its time was already charged
            charge = each.charger.run_time_charge(progress.row, progress.block, progress.seconds)
            if charge is not None:
                charges.append(charge)
                progress_by_key[charge.key] = progress
    if not charges:
        return kept
    charged, balance = await ledger.record_run_time_charges(run.charger.user_id, charges)
    for key, progress in progress_by_key.items():
        progress.charged += charged.get(key, 0)
        progress.started = None  # charged: nothing more to charge
        kept[progress.row.id] = (progress.outputs, progress.charged)
    if balance is not None:
        total = sum(charge.amount for charge in charges)
        await run.engine.after_charge(run.charger.user_id, balance, total, charges[-1].key)
    return kept


async def _end_children(
    run: GraphRun,
    children: list[FamilyMember],
    family: list[FamilyMember],
    status: ExecutionStatus,
    error: str,
    now,
) -> list[Execution]:
    """The unfinished sub-graph runs end `status`, with their outputs and stats,
    in one write; returned deepest first (the order their ends are announced)."""
    if not children:
        return []
    ids = [m.id for m in children]
    executions = await Execution.filter(id__in=ids)
    outputs = await outputs_by_execution(ids)
    for execution in executions:
        execution.status, execution.ended_at, execution.error = status, now, error
        execution.started_at = execution.started_at or now
        execution.outputs = outputs[execution.id]
    stats = await family_stats(executions, family)
    for execution in executions:
        execution.stats = stats[execution.id]
    await run.store.end_executions(run.fence, executions)
    depth = {m.id: len(m.ancestors) for m in children}
    return sorted(executions, key=lambda e: -depth[e.id])


async def _announce(
    run: GraphRun,
    members: list[FamilyMember],
    ended_rows: list[EndedRow],
    reviews: list,
    ended_runs: list[Execution],
) -> None:
    """The events of a family's end in one round trip: each of `ended_runs` gets
    its node and review events, then its end (the root's end is its own finish's,
    unless announced late); a run's node and review events go to its stream and
    its ancestors' streams."""
    bodies: dict[uuid.UUID, list[bytes]] = defaultdict(list)
    for row in ended_rows:
        bodies[row.execution_id].append(node_event(row.execution_id, row.snapshot))
    for review in reviews:
        body = dumps(review_service.review_event(review)).encode()
        bodies[review.execution_id].append(body)  # type: ignore[attr-defined]
    streams = {m.id: (m.id, *m.ancestors) for m in members}
    counts = Counter()
    ran = sum(1 for row in ended_rows if row.was_run)
    if ran:
        counts[f"node_runs|{ExecutionStatus.TERMINATED}"] = ran
    for execution in ended_runs:
        counts[f"executions|{execution.status}"] += 1
    publisher = run.engine.publisher
    async with run.engine.redis.pipeline(transaction=False) as pipe:
        for execution in ended_runs:
            own = bodies.pop(execution.id, [])
            for stream in streams[execution.id]:
                await publisher.publish_many(pipe, stream, own)
            await publish_status_on(publisher, pipe, execution)  # ended: terminal
        for execution_id, left in bodies.items():  # the root's own nodes
            for stream in streams[execution_id]:
                await publisher.publish_many(pipe, stream, left)
        run.engine.count_in(pipe, counts)
        await pipe.execute()
