"""What a run reads and writes, behind one interface with two dialects.

`RunStore` works on any database Tortoise supports (SQLite for `make dev`),
through the ORM inside shielded transactions; `PostgresRunStore`
(store_postgres.py) does each step in one SQL statement, which is what
production and the tests run. Every write carries the runner's fence
(ownership.py) and raises LostOwnership when another runner has taken over.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

import orjson

from app.models import CreditTransaction, Execution, ExecutionStatus, NodeExecution, NodeReview
from app.transactions import atomic
from workers.engine.ownership import Fence, LostOwnership
from workers.engine.routing import Routed
from workers.engine.rows import NodeRow

UNFINISHED = (
    ExecutionStatus.INCOMPLETE,
    ExecutionStatus.QUEUED,
    ExecutionStatus.RUNNING,
    # Waiting for a person (workers/engine/reviews.py).
    ExecutionStatus.REVIEW,
)


class EndedRow(NamedTuple):
    """A node execution a stop (or a failed run) ended: its snapshot as JSON, and
    whether it had been queued to run (counted as a node run)."""

    execution_id: uuid.UUID
    snapshot: bytes
    was_run: bool


def execution_end(execution: Execution) -> dict[str, Any]:
    """What an ending run writes of itself (RunStore.end_executions)."""
    return {
        "id": execution.id,
        "status": str(execution.status),
        "started_at": execution.started_at,
        "ended_at": execution.ended_at,
        "error": execution.error,
        "stats": execution.stats,
        "outputs": execution.outputs,
    }


class UnstorableOutput(Exception):
    """The database refused a node's outputs: retrying cannot help, the node fails."""


@dataclass
class ResumeState:
    # INCOMPLETE, QUEUED and RUNNING rows, in arrival order
    unfinished: list[NodeRow] = field(default_factory=list)
    failed: bool = False
    max_arrival: int = 0
    # (node id, outputs) of finished runs of static sources, in completion order
    static_outputs: list[tuple[uuid.UUID, dict[str, list[Any]]]] = field(default_factory=list)


def storable_outputs(outputs: dict[str, list[Any]], max_chars: int) -> None:
    """UnstorableOutput when the outputs cannot be JSON or pass `max_chars` of it
    (MAX_NODE_OUTPUT_CHARS: blocks that copy their inputs, chained or looped, double
    a value per step, and a few steps of a small input would run the worker, then
    each worker resuming the run, out of memory)."""
    size = len(dumps(outputs))
    if size > max_chars:
        raise UnstorableOutput(
            f"the outputs are {size:,} characters of JSON; a node may yield at most "
            f"{max_chars:,} (MAX_NODE_OUTPUT_CHARS)"
        )


def dumps(value: Any) -> str:
    """JSON text for a jsonb parameter; UnstorableOutput when it cannot be JSON."""
    try:
        return orjson.dumps(value, default=str).decode()
    except (orjson.JSONEncodeError, TypeError) as exc:
        raise UnstorableOutput(str(exc)) from None


def row_record(row: NodeRow, execution_id: uuid.UUID) -> dict[str, Any]:
    return {
        "id": row.id,
        "execution_id": execution_id,
        "node_id": row.node_id,
        "block_id": row.block_id,
        "status": row.status,
        "input_data": row.input_data,
        "output_data": {},
        "arrival": row.arrival,
        "queued_at": row.queued_at,
    }


class RunStore:
    """The dialect-neutral store (ORM, one shielded transaction per step)."""

    async def _check(self, conn: Any, fence: Fence) -> None:
        owned = Execution.filter(id=fence.root_id, runner_epoch=fence.epoch).using_db(conn)
        if not await owned.exists():
            raise LostOwnership(str(fence.root_id))

    async def claim(self, execution_id: uuid.UUID) -> int | None:
        async def work(conn: Any) -> int | None:
            row = await Execution.filter(id=execution_id).using_db(conn).first()
            if row is None:
                return None
            epoch = row.runner_epoch + 1
            await Execution.filter(id=execution_id).using_db(conn).update(runner_epoch=epoch)
            return epoch

        return await atomic(work)

    async def start(
        self, fence: Fence, execution_id: uuid.UUID, now: datetime, seeds: list[NodeRow]
    ) -> bool:
        async def work(conn: Any) -> bool:
            await self._check(conn, fence)
            moved = (
                await Execution.filter(id=execution_id, status=ExecutionStatus.QUEUED)
                .using_db(conn)
                .update(status=ExecutionStatus.RUNNING, started_at=now)
            )
            if moved:
                await NodeExecution.bulk_create(
                    [NodeExecution(**row_record(r, execution_id)) for r in seeds], using_db=conn
                )
            return bool(moved)

        return await atomic(work)

    async def resume_state(
        self, execution_id: uuid.UUID, static_sources: set[uuid.UUID]
    ) -> ResumeState:
        state = ResumeState()
        rows = (
            await NodeExecution.filter(execution_id=execution_id)
            .order_by("arrival")
            .values("id", "node_id", "block_id", "status", "input_data", "arrival")
        )
        for row in rows:
            state.max_arrival = max(state.max_arrival, row["arrival"])
            if row["status"] == ExecutionStatus.FAILED:
                state.failed = True
            if row["status"] in UNFINISHED:
                state.unfinished.append(
                    NodeRow(**{**row, "status": ExecutionStatus(row["status"])})
                )
        if static_sources:
            finished = (
                await NodeExecution.filter(
                    execution_id=execution_id,
                    node_id__in=list(static_sources),
                    status__in=[ExecutionStatus.COMPLETED, ExecutionStatus.FAILED],
                )
                .order_by("ended_at", "arrival")
                .values_list("node_id", "output_data")
            )
            state.static_outputs = [(node_id, outputs or {}) for node_id, outputs in finished]
        return state

    async def mark_running(self, fence: Fence, row_id: uuid.UUID, now: datetime) -> bool:
        async def work(conn: Any) -> bool:
            await self._check(conn, fence)
            return bool(
                await NodeExecution.filter(
                    id=row_id, status__in=[ExecutionStatus.QUEUED, ExecutionStatus.RUNNING]
                )
                .using_db(conn)
                .update(status=ExecutionStatus.RUNNING, started_at=now)
            )

        return await atomic(work)

    async def complete(
        self,
        fence: Fence,
        execution_id: uuid.UUID,
        ended: list[NodeRow],
        routed: Routed,
        starts: dict[uuid.UUID, datetime],
    ) -> set[uuid.UUID]:
        """The nodes' ends, the rows their values created and the rows they changed;
        the rows in `starts` (QUEUED, maybe among those) go RUNNING since the time
        given, as mark_running would; returns those that did (the others ended
        meanwhile)."""
        for row in ended:
            dumps(row.output_data)

        async def work(conn: Any) -> set[uuid.UUID]:
            await self._check(conn, fence)
            for row in ended:
                await (
                    NodeExecution.filter(id=row.id)
                    .using_db(conn)
                    .update(
                        status=row.status,
                        output_data=row.output_data,
                        ended_at=row.ended_at,
                        error=row.error,
                        cost=row.cost,
                    )
                )
            if routed.created:
                records = [NodeExecution(**row_record(r, execution_id)) for r in routed.created]
                await NodeExecution.bulk_create(records, using_db=conn)
            for changed in routed.updated.values():
                await (
                    NodeExecution.filter(id=changed.id)
                    .using_db(conn)
                    .update(
                        input_data=changed.input_data,
                        status=changed.status,
                        queued_at=changed.queued_at,
                    )
                )
            began = set()
            for row_id, at in starts.items():
                if await (
                    NodeExecution.filter(
                        id=row_id, status__in=[ExecutionStatus.QUEUED, ExecutionStatus.RUNNING]
                    )
                    .using_db(conn)
                    .update(status=ExecutionStatus.RUNNING, started_at=at)
                ):
                    began.add(row_id)
            return began

        return await atomic(work)

    async def end_unfinished(
        self,
        fence: Fence,
        execution_ids: list[uuid.UUID],
        statuses: tuple[ExecutionStatus, ...],
        now: datetime,
        partial: dict[uuid.UUID, tuple[dict[str, list[Any]], int]],
    ) -> list[EndedRow]:
        """Every row of these executions in `statuses` ends TERMINATED (a cancelled
        one keeps what it had yielded and what it was charged); returns them in
        arrival order."""

        async def work(conn: Any) -> list[EndedRow]:
            await self._check(conn, fence)
            query = NodeExecution.filter(execution_id__in=execution_ids, status__in=list(statuses))
            rows = await query.using_db(conn).order_by("arrival")
            await query.using_db(conn).update(status=ExecutionStatus.TERMINATED, ended_at=now)
            ended = []
            for row in rows:
                if row.id in partial:
                    row.output_data, row.cost = partial[row.id]
                    await (
                        NodeExecution.filter(id=row.id)
                        .using_db(conn)
                        .update(output_data=row.output_data, cost=row.cost)
                    )
                elif row.status == ExecutionStatus.RUNNING:
                    # Charged while it ran, unknown to this runner (store_postgres.py).
                    keys = [str(row.id), f"{row.id}:time"]
                    charged = CreditTransaction.filter(key__in=keys).using_db(conn)
                    spent = -sum(await charged.values_list("amount", flat=True))
                    if spent > row.cost:
                        row.cost = spent
                        await NodeExecution.filter(id=row.id).using_db(conn).update(cost=spent)
                row.status, row.ended_at = ExecutionStatus.TERMINATED, now
                snapshot = orjson.dumps(_snapshot(row), default=str)
                ended.append(EndedRow(row.execution_id, snapshot, row.queued_at is not None))  # type: ignore[attr-defined]
            return ended

        return await atomic(work)

    async def finish(self, fence: Fence, execution_id: uuid.UUID, changes: dict[str, Any]) -> None:
        async def work(conn: Any) -> None:
            await self._check(conn, fence)
            await Execution.filter(id=execution_id).using_db(conn).update(**changes)

        await atomic(work)

    async def end_executions(self, fence: Fence, executions: list[Execution]) -> None:
        """Several runs of the fenced family end together (a stop of their root)."""

        async def work(conn: Any) -> None:
            await self._check(conn, fence)
            for execution in executions:
                end = execution_end(execution)
                del end["id"]
                await Execution.filter(id=execution.id).using_db(conn).update(**end)

        await atomic(work)

    async def await_review(self, fence: Fence, review: NodeReview) -> bool:
        """The node (about to run) waits for a person: its row goes REVIEW and its
        review is stored, together. False when the row had ended meanwhile."""

        async def work(conn: Any) -> bool:
            await self._check(conn, fence)
            moved = (
                await NodeExecution.filter(
                    id=review.id, status__in=[ExecutionStatus.QUEUED, ExecutionStatus.RUNNING]
                )
                .using_db(conn)
                .update(status=ExecutionStatus.REVIEW)
            )
            if moved and not await NodeReview.filter(id=review.id).using_db(conn).exists():
                await review.save(using_db=conn, force_create=True)
            return bool(moved)

        return await atomic(work)

    async def take_reviewed(
        self, fence: Fence, row_id: uuid.UUID, input_data: dict[str, Any]
    ) -> bool:
        """A decided node leaves REVIEW for QUEUED, with the inputs it runs with."""

        async def work(conn: Any) -> bool:
            await self._check(conn, fence)
            return bool(
                await NodeExecution.filter(id=row_id, status=ExecutionStatus.REVIEW)
                .using_db(conn)
                .update(status=ExecutionStatus.QUEUED, input_data=input_data)
            )

        return await atomic(work)

    async def first_error(self, execution_id: uuid.UUID) -> str | None:
        first = (
            await NodeExecution.filter(execution_id=execution_id, status=ExecutionStatus.FAILED)
            .order_by("ended_at")
            .first()
            .values_list("error", flat=True)
        )
        return first

    async def row_count(self, execution_ids: list[uuid.UUID]) -> int:
        return await NodeExecution.filter(execution_id__in=execution_ids).count()


def _snapshot(row: NodeExecution) -> dict[str, Any]:
    from app.services.executions import node_execution_snapshot

    return node_execution_snapshot(row)
