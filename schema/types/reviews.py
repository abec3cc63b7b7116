"""Human review of node runs: what waits for a person, and the decision."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import strawberry
from strawberry.scalars import JSON

from app import models
from app.context import Info
from app.services.maker_secrets import masked
from schema.types.graphs import PageInfo

NodeReviewKind = strawberry.enum(
    models.NodeReviewKind,
    name="NodeReviewKind",
    description="BLOCK: a HumanReview node. SENSITIVE_NODE: a sensitive block's node in safe mode.",
)
NodeReviewStatus = strawberry.enum(models.NodeReviewStatus, name="NodeReviewStatus")


def _dt(value: str | datetime | None) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value)


@strawberry.type(description="A node run that waits (or waited) for a person's decision.")
class NodeReview:
    id: strawberry.ID = strawberry.field(description="The node execution's id.")
    node_execution_id: strawberry.ID
    execution_id: strawberry.ID = strawberry.field(
        description="The node's execution (a sub-graph run for a node inside one)."
    )
    graph_id: strawberry.ID
    graph_version: int
    node_id: strawberry.ID
    block_id: strawberry.ID
    kind: NodeReviewKind
    status: NodeReviewStatus
    message: str | None = strawberry.field(description="HumanReview's message to the person.")
    review_message: str | None = strawberry.field(
        description="The reviewer's message (the reason, when rejected or expired)."
    )
    created_at: datetime
    expires_at: datetime = strawberry.field(
        description="Unanswered by then, it is rejected (EXPIRED)."
    )
    decided_at: datetime | None
    stored_data: strawberry.Private[Any]
    stored_reviewed_data: strawberry.Private[Any]
    owner_id: strawberry.Private[uuid.UUID]
    run_key: strawberry.Private[tuple[uuid.UUID, uuid.UUID, int]]

    async def _hidden(self, info: Info) -> list[str]:
        return await info.context.loaders.maker_secrets.load(self.run_key)

    @strawberry.field(
        description=(
            "What the person reviews: HumanReview's data, or a sensitive node's inputs "
            "(input pin name to value)."
        )
    )
    async def data(self, info: Info) -> JSON:
        return masked(self.stored_data, await self._hidden(info))

    @strawberry.field(description="The approved data as edited (null: approved as shown).")
    async def reviewed_data(self, info: Info) -> JSON | None:
        return masked(self.stored_reviewed_data, await self._hidden(info))

    @classmethod
    def from_model(cls, row: models.NodeReview) -> NodeReview:
        return cls._make(
            id=row.id,
            execution_id=row.execution_id,  # type: ignore[attr-defined]
            owner_id=row.user_id,  # type: ignore[attr-defined]
            graph_id=row.graph_id,
            graph_version=row.graph_version,
            node_id=row.node_id,
            block_id=row.block_id,
            kind=models.NodeReviewKind(row.kind),
            status=models.NodeReviewStatus(row.status),
            data=row.shown,
            message=row.message,
            reviewed_data=row.edited,
            review_message=row.review_message,
            created_at=row.created_at,
            expires_at=row.expires_at,
            decided_at=row.decided_at,
        )

    @classmethod
    def from_snapshot(cls, d: dict[str, Any]) -> NodeReview:
        return cls._make(
            id=d["id"],
            execution_id=d["executionId"],
            owner_id=uuid.UUID(d["userId"]),
            graph_id=d["graphId"],
            graph_version=d["graphVersion"],
            node_id=d["nodeId"],
            block_id=d["blockId"],
            kind=models.NodeReviewKind(d["kind"]),
            status=models.NodeReviewStatus(d["status"]),
            data=d["data"],
            message=d["message"],
            reviewed_data=d["reviewedData"],
            review_message=d["reviewMessage"],
            created_at=_dt(d["createdAt"]),
            expires_at=_dt(d["expiresAt"]),
            decided_at=_dt(d["decidedAt"]),
        )

    @classmethod
    def _make(cls, *, data: Any, reviewed_data: Any, owner_id: uuid.UUID, **fields: Any):
        graph_id, version = uuid.UUID(str(fields["graph_id"])), fields["graph_version"]
        return cls(
            node_execution_id=fields["id"],
            stored_data=data,
            stored_reviewed_data=reviewed_data,
            owner_id=owner_id,
            run_key=(owner_id, graph_id, version),
            **fields,
        )


@strawberry.type
class NodeReviewEdge:
    cursor: str
    node: NodeReview


@strawberry.type
class NodeReviewConnection:
    edges: list[NodeReviewEdge]
    page_info: PageInfo
    total_count: int


@strawberry.type(
    description="A review on the run's stream: asked for, decided, expired or cancelled."
)
class NodeReviewEvent:
    seq: int
    execution_id: strawberry.ID
    review: NodeReview
