"""The run's reads and writes on PostgreSQL: one statement per step.

Each write opens with the fence: `owner` takes a KEY SHARE lock on the root
execution's row only while it still holds the runner's epoch. A runner taking
the execution over locks that row FOR UPDATE to bump the epoch, so it waits for
every fenced statement in flight, and every later one of the old runner finds no
`owner` and writes nothing. Single statements need no transaction, so a
cancelled caller cannot leave one open; values travel as one JSON parameter
(never one argument per row, so no size of run meets asyncpg's 32,767 limit).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg
import orjson
from tortoise import connections

from app.models import ExecutionStatus
from workers.engine.ownership import Fence, LostOwnership
from workers.engine.routing import Routed
from workers.engine.rows import NodeRow
from workers.engine.store import (
    UNFINISHED,
    EndedRow,
    ResumeState,
    RunStore,
    UnstorableOutput,
    dumps,
    execution_end,
)
from workers.engine.store_sql import (
    CHARGED_WHILE_RUNNING,
    ENDED,
    INSERT,
    OWNED,
    OWNER,
    ROWS,
)


def _rows_json(rows: list[NodeRow], starts: dict[uuid.UUID, datetime] | None = None) -> str:
    """The rows as one JSON parameter; those in `starts` are written RUNNING since then."""
    starts = starts or {}
    return dumps(
        [
            {
                "id": r.id,
                "node_id": r.node_id,
                "block_id": r.block_id,
                "status": ExecutionStatus.RUNNING if r.id in starts else r.status,
                "input_data": r.input_data,
                "arrival": r.arrival,
                "queued_at": r.queued_at,
                "started_at": starts.get(r.id, r.started_at),
            }
            for r in rows
        ]
    )


def _ends_json(rows: list[NodeRow]) -> str:
    return dumps(
        [
            {
                "id": r.id,
                "status": r.status,
                "output_data": r.output_data,
                "ended_at": r.ended_at,
                "error": r.error,
                "cost": r.cost,
            }
            for r in rows
        ]
    )


async def _fetchrow(sql: str, *args: Any) -> Any:
    async with connections.get("default").acquire_connection() as conn:
        return await conn.fetchrow(sql, *args)


async def _fetch(sql: str, *args: Any) -> list[Any]:
    async with connections.get("default").acquire_connection() as conn:
        return await conn.fetch(sql, *args)


def _owned_or_lost(owned: int, fence: Fence) -> None:
    if not owned:
        raise LostOwnership(str(fence.root_id))


class PostgresRunStore(RunStore):
    async def claim(self, execution_id: uuid.UUID) -> int | None:
        row = await _fetchrow(
            "UPDATE executions SET runner_epoch = runner_epoch + 1 WHERE id = "
            "(SELECT id FROM executions WHERE id = $1 FOR UPDATE) RETURNING runner_epoch",
            execution_id,
        )
        return row["runner_epoch"] if row else None

    async def start(
        self, fence: Fence, execution_id: uuid.UUID, now: datetime, seeds: list[NodeRow]
    ) -> bool:
        row = await _fetchrow(
            f"WITH {OWNER}, moved AS (UPDATE executions SET status = 'RUNNING', started_at = $4 "
            f"WHERE id = $3 AND status = 'QUEUED' AND {OWNED} RETURNING id), "
            f"seeded AS ({INSERT.format(execution='$3', param='$5')} "
            "WHERE EXISTS (SELECT 1 FROM moved) RETURNING 1) "
            "SELECT (SELECT count(*) FROM owner) AS owned, (SELECT count(*) FROM moved) AS moved",
            fence.root_id,
            fence.epoch,
            execution_id,
            now,
            _rows_json(seeds),
        )
        _owned_or_lost(row["owned"], fence)
        return bool(row["moved"])

    async def resume_state(
        self, execution_id: uuid.UUID, static_sources: set[uuid.UUID]
    ) -> ResumeState:
        state = ResumeState()
        for row in await _fetch(
            "SELECT id, node_id, block_id, status, input_data, arrival FROM node_executions "
            "WHERE execution_id = $1 AND status = ANY($2::text[]) ORDER BY arrival",
            execution_id,
            [str(s) for s in UNFINISHED],
        ):
            state.unfinished.append(
                NodeRow(
                    id=row["id"],
                    node_id=row["node_id"],
                    block_id=row["block_id"],
                    status=ExecutionStatus(row["status"]),
                    input_data=orjson.loads(row["input_data"]),
                    arrival=row["arrival"],
                )
            )
        summary = await _fetchrow(
            "SELECT coalesce(max(arrival), 0) AS arrival, "
            "count(*) FILTER (WHERE status = 'FAILED') AS failed "
            "FROM node_executions WHERE execution_id = $1",
            execution_id,
        )
        state.max_arrival, state.failed = summary["arrival"], summary["failed"] > 0
        if static_sources:
            state.static_outputs = [
                (row["node_id"], orjson.loads(row["output_data"]))
                for row in await _fetch(
                    "SELECT node_id, output_data FROM node_executions WHERE execution_id = $1 "
                    "AND node_id = ANY($2::uuid[]) AND status IN ('COMPLETED', 'FAILED') "
                    "ORDER BY ended_at, arrival",
                    execution_id,
                    list(static_sources),
                )
            ]
        return state

    async def mark_running(self, fence: Fence, row_id: uuid.UUID, now: datetime) -> bool:
        row = await _fetchrow(
            f"WITH {OWNER}, moved AS (UPDATE node_executions SET status = 'RUNNING', "
            "started_at = $4 WHERE id = $3 AND status IN ('QUEUED', 'RUNNING') "
            f"AND {OWNED} RETURNING 1) "
            "SELECT (SELECT count(*) FROM owner) AS owned, (SELECT count(*) FROM moved) AS moved",
            fence.root_id,
            fence.epoch,
            row_id,
            now,
        )
        _owned_or_lost(row["owned"], fence)
        return bool(row["moved"])

    async def complete(
        self,
        fence: Fence,
        execution_id: uuid.UUID,
        ended: list[NodeRow],
        routed: Routed,
        starts: dict[uuid.UUID, datetime],
    ) -> set[uuid.UUID]:
        if len(ended) == 1:
            # One end (a chain's step): plain parameters plan faster than a recordset join.
            [row] = ended
            done = (
                "done AS (UPDATE node_executions SET status = $3, output_data = $4::jsonb, "
                f"ended_at = $5, error = $6, cost = $7 WHERE id = $8 AND {OWNED} RETURNING 1)"
            )
            args: list[Any] = [
                fence.root_id,
                fence.epoch,
                str(row.status),
                dumps(row.output_data),
                row.ended_at,
                row.error,
                row.cost,
                row.id,
            ]
        else:
            done = (
                "done AS (UPDATE node_executions n SET status = d.status, "
                "output_data = d.output_data, ended_at = d.ended_at, error = d.error, "
                "cost = d.cost FROM jsonb_to_recordset($3::jsonb) AS d(id uuid, status text, "
                "output_data jsonb, ended_at timestamptz, error text, cost int) "
                f"WHERE n.id = d.id AND {OWNED} RETURNING 1)"
            )
            args = [fence.root_id, fence.epoch, _ends_json(ended)]
        parts = [OWNER, done]
        if routed.created:
            args += [execution_id, _rows_json(routed.created, starts)]
            insert = INSERT.format(execution=f"${len(args) - 1}", param=f"${len(args)}")
            parts.append(f"created AS ({insert} WHERE {OWNED} RETURNING 1)")
        if routed.updated:
            args.append(_rows_json(list(routed.updated.values()), starts))
            rows = ROWS.format(param=f"${len(args)}")
            parts.append(
                "changed AS (UPDATE node_executions n SET input_data = r.input_data, "
                "status = r.status, queued_at = r.queued_at, started_at = r.started_at "
                f"FROM {rows} WHERE n.id = r.id AND {OWNED} RETURNING 1)"
            )
        # Rows queued before this write start as mark_running would: only if still to run.
        waited = {row_id: at for row_id, at in starts.items() if not routed.holds_id(row_id)}
        if waited:
            args.append(dumps([{"id": row_id, "at": at} for row_id, at in waited.items()]))
            parts.append(
                "began AS (UPDATE node_executions n SET status = 'RUNNING', started_at = s.at "
                f"FROM jsonb_to_recordset(${len(args)}::jsonb) AS s(id uuid, at timestamptz) "
                f"WHERE n.id = s.id AND n.status IN ('QUEUED', 'RUNNING') AND {OWNED} "
                "RETURNING n.id)"
            )
        sql = (
            "WITH "
            + ", ".join(parts)
            + " SELECT (SELECT count(*) FROM owner) AS owned, "
            + ("(SELECT array_agg(id) FROM began)" if waited else "NULL::uuid[]")
            + " AS began"
        )
        try:
            result = await _fetchrow(sql, *args)
        except asyncpg.exceptions.DataError as exc:
            # e.g. text PostgreSQL cannot hold: the same values would fail again.
            raise UnstorableOutput(str(exc)) from None
        _owned_or_lost(result["owned"], fence)
        return {row_id for row_id in starts if row_id not in waited} | set(result["began"] or ())

    async def end_unfinished(
        self,
        fence: Fence,
        execution_ids: list[uuid.UUID],
        statuses: tuple[ExecutionStatus, ...],
        now: datetime,
        partial: dict[uuid.UUID, tuple[dict[str, list[Any]], int]],
    ) -> list[EndedRow]:
        kept = dumps(
            [
                {"id": row_id, "output_data": outputs, "cost": cost}
                for row_id, (outputs, cost) in partial.items()
            ]
        )
        # The few rows a stop cancelled keep what they yielded and were charged; the
        # rest end by execution id in the same statement (disjoint rows).
        rows = await _fetch(
            f"WITH {OWNER}, kept AS (SELECT * FROM jsonb_to_recordset($6::jsonb) "
            "AS k(id uuid, output_data jsonb, cost int)), "
            "stopped AS (UPDATE node_executions n SET status = 'TERMINATED', ended_at = $4, "
            "output_data = k.output_data, cost = k.cost FROM kept k "
            "WHERE n.id = k.id AND n.execution_id = ANY($3::uuid[]) "
            f"AND n.status = ANY($5::text[]) AND {OWNED} "
            f"RETURNING {ENDED}), "
            "rest AS (UPDATE node_executions n SET status = 'TERMINATED', ended_at = $4, "
            f"cost = {CHARGED_WHILE_RUNNING} "
            "WHERE n.execution_id = ANY($3::uuid[]) AND n.status = ANY($5::text[]) "
            f"AND n.id NOT IN (SELECT id FROM kept) AND {OWNED} "
            f"RETURNING {ENDED}) "
            "SELECT * FROM stopped UNION ALL SELECT * FROM rest",
            fence.root_id,
            fence.epoch,
            execution_ids,
            now,
            [str(s) for s in statuses],
            kept,
        )
        if not rows:
            owned = await _fetchrow(
                "SELECT count(*) AS owned FROM executions WHERE id = $1 AND runner_epoch = $2",
                fence.root_id,
                fence.epoch,
            )
            _owned_or_lost(owned["owned"], fence)
        return [
            EndedRow(row["execution_id"], row["snapshot"].encode(), row["was_run"])
            for row in sorted(rows, key=lambda r: r["arrival"])
        ]

    async def end_executions(self, fence: Fence, executions: list[Any]) -> None:
        ends = dumps([execution_end(execution) for execution in executions])
        row = await _fetchrow(
            f"WITH {OWNER}, ends AS (SELECT * FROM jsonb_to_recordset($3::jsonb) AS r("
            "id uuid, status text, started_at timestamptz, ended_at timestamptz, error text, "
            "stats jsonb, outputs jsonb)), "
            "done AS (UPDATE executions e SET status = r.status, started_at = r.started_at, "
            "ended_at = r.ended_at, error = r.error, stats = r.stats, outputs = r.outputs "
            f"FROM ends r WHERE e.id = r.id AND {OWNED} RETURNING 1) "
            "SELECT (SELECT count(*) FROM owner) AS owned",
            fence.root_id,
            fence.epoch,
            ends,
        )
        _owned_or_lost(row["owned"], fence)

    async def finish(self, fence: Fence, execution_id: uuid.UUID, changes: dict[str, Any]) -> None:
        columns, args = [], [fence.root_id, fence.epoch, execution_id]
        for name, value in changes.items():
            args.append(dumps(value) if name in ("stats", "outputs") else value)
            cast = "::jsonb" if name in ("stats", "outputs") else ""
            columns.append(f"{name} = ${len(args)}{cast}")
        row = await _fetchrow(
            f"WITH {OWNER}, done AS (UPDATE executions SET {', '.join(columns)} "
            f"WHERE id = $3 AND {OWNED} RETURNING 1) "
            "SELECT (SELECT count(*) FROM owner) AS owned",
            *args,
        )
        _owned_or_lost(row["owned"], fence)

    async def await_review(self, fence: Fence, review: Any) -> bool:
        row = await _fetchrow(
            f"WITH {OWNER}, moved AS (UPDATE node_executions SET status = 'REVIEW' "
            f"WHERE id = $3 AND status IN ('QUEUED', 'RUNNING') AND {OWNED} RETURNING 1), "
            "made AS (INSERT INTO node_reviews (id, user_id, execution_id, root_execution_id, "
            "graph_id, graph_version, node_id, block_id, kind, status, data, message, "
            "created_at, expires_at) SELECT $3, $4, $5, $1, $6, $7, $8, $9, $10, 'PENDING', "
            "$11::jsonb, $12, $13, $14 WHERE EXISTS (SELECT 1 FROM moved) "
            "ON CONFLICT (id) DO NOTHING RETURNING 1) "
            "SELECT (SELECT count(*) FROM owner) AS owned, (SELECT count(*) FROM moved) AS moved",
            fence.root_id,
            fence.epoch,
            review.id,
            review.user_id,
            review.execution_id,
            review.graph_id,
            review.graph_version,
            review.node_id,
            review.block_id,
            str(review.kind),
            dumps(review.data),  # already boxed
            review.message,
            review.created_at,
            review.expires_at,
        )
        _owned_or_lost(row["owned"], fence)
        return bool(row["moved"])

    async def take_reviewed(
        self, fence: Fence, row_id: uuid.UUID, input_data: dict[str, Any]
    ) -> bool:
        row = await _fetchrow(
            f"WITH {OWNER}, moved AS (UPDATE node_executions SET status = 'QUEUED', "
            f"input_data = $4::jsonb WHERE id = $3 AND status = 'REVIEW' AND {OWNED} "
            "RETURNING 1) "
            "SELECT (SELECT count(*) FROM owner) AS owned, (SELECT count(*) FROM moved) AS moved",
            fence.root_id,
            fence.epoch,
            row_id,
            dumps(input_data),
        )
        _owned_or_lost(row["owned"], fence)
        return bool(row["moved"])

    async def first_error(self, execution_id: uuid.UUID) -> str | None:
        row = await _fetchrow(
            "SELECT error FROM node_executions WHERE execution_id = $1 AND status = 'FAILED' "
            "ORDER BY ended_at LIMIT 1",
            execution_id,
        )
        return row["error"] if row else None

    async def row_count(self, execution_ids: list[uuid.UUID]) -> int:
        row = await _fetchrow(
            "SELECT count(*) AS n FROM node_executions WHERE execution_id = ANY($1::uuid[])",
            execution_ids,
        )
        return row["n"]
