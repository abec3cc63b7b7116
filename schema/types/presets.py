"""Presets: saved inputs and credential ids for one graph version."""

from __future__ import annotations

from datetime import datetime

import strawberry
from strawberry.scalars import JSON

from app import models
from app.services import trigger_setup
from schema.types.triggers import Trigger


@strawberry.type(
    description=(
        "Saved inputs and credentials for one graph version. It follows the library "
        "entry to newer versions; a run fails validation when they no longer fit."
    )
)
class Preset:
    id: strawberry.ID
    graph_id: strawberry.ID
    graph_version: int
    name: str
    description: str
    inputs: JSON
    credentials_inputs: JSON = strawberry.field(
        description="Credentials field to the id of stored credentials (never a secret)."
    )
    created_at: datetime
    updated_at: datetime
    row: strawberry.Private[models.Preset]

    @strawberry.field(
        description="Its own webhook trigger, when its graph version has a WebhookTrigger node."
    )
    async def trigger(self) -> Trigger | None:
        row = await trigger_setup.preset_trigger(self.row.id)
        return Trigger.from_model(row) if row else None

    @classmethod
    def from_model(cls, row: models.Preset) -> Preset:
        return cls(
            id=strawberry.ID(str(row.id)),
            graph_id=strawberry.ID(str(row.graph_id)),
            graph_version=row.graph_version,
            name=row.name,
            description=row.description,
            inputs=row.inputs or {},
            credentials_inputs=row.credentials_inputs or {},
            created_at=row.created_at,
            updated_at=row.updated_at,
            row=row,
        )
