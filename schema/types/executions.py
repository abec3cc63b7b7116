"""Executions, node executions, their live events, and shared views."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

import strawberry
from strawberry.scalars import JSON

from app import models
from app.context import Info
from app.services import feature_flags
from app.services.maker_secrets import masked, masked_text
from schema.types.graphs import GraphSource, PageInfo
from schema.types.reviews import NodeReview, NodeReviewEvent

ExecutionStatus = strawberry.enum(models.ExecutionStatus, name="ExecutionStatus")


def _dt(value: str | datetime | None) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value)


@strawberry.type
class ExecutionStats:
    cost: int = strawberry.field(description="Credits charged for this execution.")
    duration_seconds: float = strawberry.field(description="Wall time from start to end, seconds.")
    node_run_seconds: float = strawberry.field(description="Summed node run time, seconds.")
    node_count: int
    node_error_count: int
    activity_summary: str | None = strawberry.field(
        description="Hidden (null) unless the AI_ACTIVITY_STATUS flag is on for the user."
    )
    correctness_score: float | None = strawberry.field(
        description="Hidden (null) unless the AI_ACTIVITY_STATUS flag is on for the user."
    )
    error: str | None


@strawberry.type
class NodeExecution:
    id: strawberry.ID
    node_id: strawberry.ID
    block_id: strawberry.ID
    status: ExecutionStatus
    input_data: JSON = strawberry.field(description="Input pin name to value.")
    output_data: JSON = strawberry.field(
        description="Output pin name to the list of values it produced."
    )
    queued_at: datetime | None
    started_at: datetime | None
    ended_at: datetime | None
    error: str | None

    # `hidden`: a store agent maker's secret-looking defaults, shown as "***" to its
    # users (app/services/maker_secrets.py); empty for a run of one's own graph.
    @classmethod
    def from_model(
        cls, row: models.NodeExecution, hidden: list[str] | None = None
    ) -> NodeExecution:
        hidden = hidden or []
        return cls(
            id=row.id,
            node_id=row.node_id,
            block_id=row.block_id,
            status=row.status,
            input_data=masked(row.input_data, hidden),
            output_data=masked(row.output_data, hidden),
            queued_at=row.queued_at,
            started_at=row.started_at,
            ended_at=row.ended_at,
            error=masked_text(row.error, hidden),
        )

    @classmethod
    def from_snapshot(cls, d: dict[str, Any], hidden: list[str] | None = None) -> NodeExecution:
        hidden = hidden or []
        return cls(
            id=d["id"],
            node_id=d["nodeId"],
            block_id=d["blockId"],
            status=models.ExecutionStatus(d["status"]),
            input_data=masked(d["inputData"], hidden),
            output_data=masked(d["outputData"], hidden),
            queued_at=_dt(d["queuedAt"]),
            started_at=_dt(d["startedAt"]),
            ended_at=_dt(d["endedAt"]),
            error=masked_text(d["error"], hidden),
        )


@strawberry.type
class Execution:
    id: strawberry.ID
    graph_id: strawberry.ID
    graph_version: int
    status: ExecutionStatus
    inputs: JSON

    async def _outputs(self, info: Info) -> JSON:
        return masked(self.stored_outputs, await self._hidden(info))

    outputs: JSON = strawberry.field(
        resolver=_outputs, description="Output name (from output blocks) to the list of values."
    )
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    share_token: str | None
    source: GraphSource | None
    max_credits: int | None = strawberry.field(
        description=(
            "The run's budget (executeGraph's maxCredits): it ends FAILED with "
            '"Budget exceeded" before a charge, its sub-graph runs\' included, would pass it. '
            "Null without one, and on sub-graph runs (they share their root's)."
        )
    )
    owner_id: strawberry.Private[uuid.UUID]
    stored_stats: strawberry.Private[dict | None]
    error: strawberry.Private[str | None]
    stored_outputs: strawberry.Private[dict]

    async def _hidden(self, info: Info) -> list[str]:
        """What the graph's maker hides from this run's runner (nothing in own runs)."""
        return await info.context.loaders.maker_secrets.load(
            (self.owner_id, uuid.UUID(str(self.graph_id)), self.graph_version)
        )

    @strawberry.field
    def is_shared(self) -> bool:
        return self.share_token is not None

    @strawberry.field(
        description=(
            "While QUEUED: this run's place among its owner's queued runs, oldest "
            "first (1 = the next of them to start; they start in this order as the "
            "owner's MAX_RUNNING_EXECUTIONS_PER_USER slots free). Null otherwise."
        )
    )
    async def queue_position(self, info: Info) -> int | None:
        if self.status != models.ExecutionStatus.QUEUED:
            return None
        return await info.context.loaders.queue_positions.load(uuid.UUID(str(self.id)))

    @strawberry.field
    async def node_executions(self, info: Info) -> list[NodeExecution]:
        rows = await info.context.loaders.node_executions.load(uuid.UUID(str(self.id)))
        hidden = await self._hidden(info)
        return [NodeExecution.from_model(row, hidden) for row in rows]

    @strawberry.field(
        description="Its nodes (and its sub-graph runs' nodes) waiting for a person, oldest first."
    )
    async def pending_reviews(self, info: Info) -> list[NodeReview]:
        rows = await info.context.loaders.pending_reviews.load(uuid.UUID(str(self.id)))
        return [NodeReview.from_model(row) for row in rows]

    @strawberry.field
    async def stats(self, info: Info) -> ExecutionStats | None:
        stats = self.stored_stats
        if stats is None:
            return None
        insight = await feature_flags.is_enabled(
            info.context.settings, self.owner_id, "AI_ACTIVITY_STATUS"
        )
        return ExecutionStats(
            cost=stats.get("cost", 0),
            duration_seconds=stats.get("duration_seconds", 0.0),
            node_run_seconds=stats.get("node_run_seconds", 0.0),
            node_count=stats.get("node_count", 0),
            node_error_count=stats.get("node_error_count", 0),
            activity_summary=stats.get("activity_summary") if insight else None,
            correctness_score=stats.get("correctness_score") if insight else None,
            error=masked_text(self.error, await self._hidden(info)),
        )

    @classmethod
    def from_model(cls, row: models.Execution) -> Execution:
        return cls(
            id=row.id,
            graph_id=row.graph_id,
            graph_version=row.graph_version,
            status=row.status,
            inputs=row.inputs,
            stored_outputs=row.outputs,
            created_at=row.created_at,
            started_at=row.started_at,
            ended_at=row.ended_at,
            share_token=str(row.share_token) if row.share_token else None,
            source=row.source,
            max_credits=row.max_credits,
            owner_id=row.user_id,  # type: ignore[attr-defined]
            stored_stats=row.stats,
            error=row.error,
        )

    @classmethod
    def from_snapshot(cls, d: dict[str, Any]) -> Execution:
        return cls(
            id=d["id"],
            graph_id=d["graphId"],
            graph_version=d["graphVersion"],
            status=models.ExecutionStatus(d["status"]),
            inputs=d["inputs"],
            stored_outputs=d["outputs"],
            created_at=_dt(d["createdAt"]),
            started_at=_dt(d["startedAt"]),
            ended_at=_dt(d["endedAt"]),
            share_token=d["shareToken"],
            source=models.GraphSource(d["source"]) if d["source"] else None,
            max_credits=d.get("maxCredits"),
            owner_id=uuid.UUID(d["userId"]),
            stored_stats=d["stats"],
            error=d["error"],
        )


@strawberry.type
class ExecutionEdge:
    cursor: str
    node: Execution


@strawberry.type
class ExecutionConnection:
    edges: list[ExecutionEdge]
    page_info: PageInfo
    total_count: int


@strawberry.type
class ShareLink:
    share_url: str
    share_token: str
    execution: Execution = strawberry.field(
        description="The execution now shared (isShared, shareToken), to refresh client caches."
    )


@strawberry.type
class SharedExecution:
    id: strawberry.ID
    graph_name: str
    graph_description: str
    status: ExecutionStatus
    created_at: datetime
    outputs: JSON


@strawberry.type
class ExecutionStatusEvent:
    seq: int
    execution: Execution


@strawberry.type
class NodeExecutionEvent:
    seq: int
    execution_id: strawberry.ID
    node_execution: NodeExecution


ExecutionEvent = Annotated[
    ExecutionStatusEvent | NodeExecutionEvent | NodeReviewEvent,
    strawberry.union("ExecutionEvent"),
]
