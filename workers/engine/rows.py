"""A node execution as the engine holds it while it runs: plain data, no ORM model
(building models is measurable on the per-node path), with the snapshot that
node events carry (the same fields as app.services.executions.node_execution_snapshot)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from app.models import ExecutionStatus


@dataclass(slots=True, eq=False)
class NodeRow:
    id: uuid.UUID
    node_id: uuid.UUID
    block_id: uuid.UUID
    status: ExecutionStatus
    # For an INCOMPLETE row: the values gathered so far, by pin.
    input_data: dict[str, Any]
    # Arrival order within the execution: keeps per-pin queues FIFO across restarts.
    arrival: int
    output_data: dict[str, list[Any]] = field(default_factory=dict)
    queued_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    error: str | None = None
    cost: int = 0

    def snapshot(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "nodeId": str(self.node_id),
            "blockId": str(self.block_id),
            "status": str(self.status),
            "inputData": self.input_data,
            "outputData": self.output_data,
            "queuedAt": _iso(self.queued_at),
            "startedAt": _iso(self.started_at),
            "endedAt": _iso(self.ended_at),
            "error": self.error,
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def node_event(execution_id: uuid.UUID, snapshot: dict[str, Any] | bytes) -> bytes:
    """The body of a node event, as bytes for the event stream. `snapshot` may
    already be JSON (the database builds it for set-based ends)."""
    if isinstance(snapshot, dict):
        snapshot = orjson.dumps(snapshot, default=str)
    return b'{"kind":"node","executionId":"%s","nodeExecution":%s}' % (
        str(execution_id).encode(),
        snapshot,
    )
