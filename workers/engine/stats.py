"""An execution's stats, written when it ends: a few aggregates, never the rows."""

from __future__ import annotations

from typing import Any

from tortoise import connections

from app.models import Execution, ExecutionStatus, NodeExecution
from app.services.executions import descendant_ids

_PG_TOTALS = """
SELECT
  count(*) FILTER (WHERE execution_id = $1) AS node_count,
  count(*) FILTER (WHERE execution_id = $1 AND status = 'COMPLETED') AS completed,
  count(*) FILTER (WHERE execution_id = $1 AND status = 'FAILED') AS failed,
  coalesce(sum(extract(epoch FROM ended_at - started_at))
    FILTER (WHERE execution_id = $1 AND started_at IS NOT NULL AND ended_at IS NOT NULL), 0)
    AS run_seconds,
  coalesce(sum(cost), 0) AS cost
FROM node_executions
WHERE execution_id = ANY($2::uuid[]) AND status <> 'INCOMPLETE'
"""


async def _totals(execution: Execution) -> dict[str, Any]:
    family = await descendant_ids(execution.id)
    client = connections.get("default")
    if client.capabilities.dialect == "postgres":
        async with client.acquire_connection() as conn:
            row = await conn.fetchrow(_PG_TOTALS, execution.id, family)
        return {**dict(row), "run_seconds": float(row["run_seconds"])}
    rows = await (
        NodeExecution.filter(execution_id__in=family)
        .exclude(status=ExecutionStatus.INCOMPLETE)
        .values("execution_id", "status", "started_at", "ended_at", "cost")
    )
    own = [row for row in rows if row["execution_id"] == execution.id]
    return {
        "node_count": len(own),
        "completed": sum(1 for row in own if row["status"] == ExecutionStatus.COMPLETED),
        "failed": sum(1 for row in own if row["status"] == ExecutionStatus.FAILED),
        "run_seconds": sum(
            (row["ended_at"] - row["started_at"]).total_seconds()
            for row in own
            if row["started_at"] is not None and row["ended_at"] is not None
        ),
        "cost": sum(row["cost"] for row in rows),
    }


async def execution_stats(execution: Execution) -> dict[str, Any]:
    """Cost (sub-graph runs included), durations, counts, and the activity
    summary and correctness score (shown only to users with AI_ACTIVITY_STATUS)."""
    totals = await _totals(execution)
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
        "cost": int(totals["cost"]),
        "duration_seconds": round(duration, 6),
        "node_run_seconds": round(totals["run_seconds"], 6),
        "node_count": node_count,
        "node_error_count": totals["failed"],
        "activity_summary": summary,
        "correctness_score": (totals["completed"] / node_count) if node_count else None,
    }
