"""An execution's stats, written when it ends: a few aggregates, never the rows."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from tortoise import connections

from app.models import Execution, ExecutionStatus, NodeExecution
from app.services.execution_family import FamilyMember, family_of

_PG_TOTALS = """
SELECT
  execution_id,
  count(*) AS node_count,
  count(*) FILTER (WHERE status = 'COMPLETED') AS completed,
  count(*) FILTER (WHERE status = 'FAILED') AS failed,
  coalesce(sum(extract(epoch FROM ended_at - started_at))
    FILTER (WHERE started_at IS NOT NULL AND ended_at IS NOT NULL), 0) AS run_seconds,
  coalesce(sum(cost), 0) AS cost
FROM node_executions
WHERE execution_id = ANY($1::uuid[]) AND status <> 'INCOMPLETE'
GROUP BY execution_id
"""

_EMPTY = {"node_count": 0, "completed": 0, "failed": 0, "run_seconds": 0.0, "cost": 0}


async def _totals_by_execution(ids: list[uuid.UUID]) -> dict[uuid.UUID, dict[str, Any]]:
    """Each execution's own node totals, in one query for all of them."""
    client = connections.get("default")
    if client.capabilities.dialect == "postgres":
        async with client.acquire_connection() as conn:
            rows = await conn.fetch(_PG_TOTALS, ids)
        return {
            row["execution_id"]: {**dict(row), "run_seconds": float(row["run_seconds"])}
            for row in rows
        }
    totals: dict[uuid.UUID, dict[str, Any]] = {}
    rows = await (
        NodeExecution.filter(execution_id__in=ids)
        .exclude(status=ExecutionStatus.INCOMPLETE)
        .values("execution_id", "status", "started_at", "ended_at", "cost")
    )
    for row in rows:
        own = totals.setdefault(row["execution_id"], dict(_EMPTY))
        own["node_count"] += 1
        own["completed"] += row["status"] == ExecutionStatus.COMPLETED
        own["failed"] += row["status"] == ExecutionStatus.FAILED
        if row["started_at"] is not None and row["ended_at"] is not None:
            own["run_seconds"] += (row["ended_at"] - row["started_at"]).total_seconds()
        own["cost"] += row["cost"]
    return totals


def _family_cost(family: Iterable[FamilyMember], totals: dict[uuid.UUID, dict[str, Any]]):
    """Each run's cost with the cost of every sub-graph run below it."""
    cost: dict[uuid.UUID, int] = {}
    for member in family:
        own = int(totals.get(member.id, _EMPTY)["cost"])
        for execution_id in (member.id, *member.ancestors):
            cost[execution_id] = cost.get(execution_id, 0) + own
    return cost


def _stats(execution: Execution, totals: dict[str, Any], cost: int) -> dict[str, Any]:
    node_count = totals["node_count"]
    duration = 0.0
    if execution.started_at and execution.ended_at:
        duration = (execution.ended_at - execution.started_at).total_seconds()
    outputs = ", ".join(sorted(execution.outputs or {})) or "none"
    summary = (
        f"{execution.status.title()} after {duration:.1f} s: ran {node_count} node(s), "
        f"{totals['completed']} completed, {totals['failed']} failed; outputs: {outputs}."
    )
    return {
        "cost": cost,
        "duration_seconds": round(duration, 6),
        "node_run_seconds": round(totals["run_seconds"], 6),
        "node_count": node_count,
        "node_error_count": totals["failed"],
        "activity_summary": summary,
        "correctness_score": (totals["completed"] / node_count) if node_count else None,
    }


async def execution_stats(execution: Execution) -> dict[str, Any]:
    """Cost (sub-graph runs included), durations, counts, and the activity
    summary and correctness score (shown only to users with AI_ACTIVITY_STATUS)."""
    family = await family_of(execution.id)
    totals = await _totals_by_execution([member.id for member in family] or [execution.id])
    cost = _family_cost(family, totals).get(execution.id, 0)
    return _stats(execution, totals.get(execution.id, _EMPTY), cost)


async def family_stats(
    executions: list[Execution], family: list[FamilyMember]
) -> dict[uuid.UUID, dict[str, Any]]:
    """The stats of several runs of one family (ending together), in one query."""
    totals = await _totals_by_execution([member.id for member in family])
    cost = _family_cost(family, totals)
    return {e.id: _stats(e, totals.get(e.id, _EMPTY), cost.get(e.id, 0)) for e in executions}
