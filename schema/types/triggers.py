"""Webhook triggers and their deliveries; the signing secret only once, on rotation."""

from __future__ import annotations

from datetime import datetime

import strawberry

from app import models
from app.context import Info
from app.services import trigger_setup
from schema.types.pages import PageInfo

TriggerDeliveryStatus = strawberry.enum(models.TriggerDeliveryStatus, name="TriggerDeliveryStatus")


@strawberry.type(
    description=(
        "A URL that starts a run when a signed POST arrives (HMAC-SHA256 over "
        '"<timestamp>.<body>", header AgentGraph-Signature: t=<timestamp>,v1=<hex>).'
    )
)
class Trigger:
    id: strawberry.ID
    is_enabled: bool
    preset_id: strawberry.ID | None = strawberry.field(
        description="Set when the trigger belongs to a preset (its inputs are merged in)."
    )
    created_at: datetime
    secret_rotated_at: datetime | None

    @strawberry.field(description="Where senders POST.")
    def url(self, info: Info) -> str:
        return f"{info.context.settings.PUBLIC_API_URL.rstrip('/')}/api/triggers/{self.id}"

    @classmethod
    def from_model(cls, row: models.Trigger) -> Trigger:
        preset_id = row.preset_id  # type: ignore[attr-defined]
        return cls(
            id=strawberry.ID(str(row.id)),
            is_enabled=row.is_enabled,
            preset_id=strawberry.ID(str(preset_id)) if preset_id else None,
            created_at=row.created_at,
            secret_rotated_at=row.secret_rotated_at,
        )


@strawberry.type
class TriggerSecret:
    trigger: Trigger
    secret: str = strawberry.field(
        description="The signing secret, shown once; the previous one stopped working."
    )


@strawberry.type
class TriggerDelivery:
    id: strawberry.ID
    trigger_id: strawberry.ID
    delivery_id: str = strawberry.field(
        description="The sender's AgentGraph-Delivery-Id, else sig-<SHA-256 of what was signed>."
    )
    status: TriggerDeliveryStatus
    execution_id: strawberry.ID | None
    error: str | None = strawberry.field(description="Why no run started (REJECTED).")
    attempts: int = strawberry.field(description="1, plus one per replay that was ignored.")
    received_at: datetime

    @classmethod
    def from_model(cls, row: models.TriggerDelivery) -> TriggerDelivery:
        return cls(
            id=strawberry.ID(str(row.id)),
            trigger_id=strawberry.ID(str(row.trigger_id)),  # type: ignore[attr-defined]
            delivery_id=row.delivery_id,
            status=row.status,
            execution_id=strawberry.ID(str(row.execution_id)) if row.execution_id else None,
            error=row.error,
            attempts=row.attempts,
            received_at=row.received_at,
        )


@strawberry.type
class TriggerDeliveryEdge:
    cursor: str
    node: TriggerDelivery


@strawberry.type
class TriggerDeliveryConnection:
    edges: list[TriggerDeliveryEdge]
    page_info: PageInfo
    total_count: int

    @classmethod
    def from_page(cls, page: trigger_setup.DeliveryPage) -> TriggerDeliveryConnection:
        edges = [
            TriggerDeliveryEdge(cursor=page.cursor(row), node=TriggerDelivery.from_model(row))
            for row in page.deliveries
        ]
        return cls(
            edges=edges,
            page_info=PageInfo(
                has_next_page=page.has_next, end_cursor=edges[-1].cursor if edges else None
            ),
            total_count=page.total,
        )
