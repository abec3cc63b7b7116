"""An execution's stats, written when it ends."""

from __future__ import annotations

from typing import Any

from app.models import Execution, ExecutionStatus, NodeExecution
from app.services.executions import descendant_ids


async def execution_stats(execution: Execution) -> dict[str, Any]:
    """Cost (sub-graph runs included), durations, counts, and the activity
    summary and correctness score (shown only to users with AI_ACTIVITY_STATUS)."""
    family = await descendant_ids(execution.id)
    rows = await NodeExecution.filter(execution_id__in=family).exclude(
        status=ExecutionStatus.INCOMPLETE
    )
    own = [row for row in rows if row.execution_id == execution.id]  # type: ignore[attr-defined]
    ran = [row for row in own if row.started_at is not None]
    completed = sum(1 for row in own if row.status == ExecutionStatus.COMPLETED)
    failed = sum(1 for row in own if row.status == ExecutionStatus.FAILED)
    run_seconds = sum(
        (row.ended_at - row.started_at).total_seconds() for row in ran if row.ended_at is not None
    )
    duration = 0.0
    if execution.started_at and execution.ended_at:
        duration = (execution.ended_at - execution.started_at).total_seconds()
    outputs = ", ".join(sorted(execution.outputs or {})) or "none"
    summary = (
        f"{execution.status.title()} after {duration:.1f} s: ran {len(own)} node(s), "
        f"{completed} completed, {failed} failed; outputs: {outputs}."
    )
    return {
        "cost": sum(row.cost for row in rows),
        "duration_seconds": round(duration, 6),
        "node_run_seconds": round(run_seconds, 6),
        "node_count": len(own),
        "node_error_count": failed,
        "activity_summary": summary,
        "correctness_score": (completed / len(own)) if own else None,
    }
