"""Schedules as clients see them: never the credentials they run with."""

from __future__ import annotations

from datetime import datetime

import strawberry
from strawberry.scalars import JSON

from app import models
from app.services.schedules import next_run_time


@strawberry.type
class Schedule:
    id: strawberry.ID
    name: str
    graph_id: strawberry.ID
    graph_version: int
    cron: str
    timezone: str
    inputs: JSON
    next_run_time: datetime | None = strawberry.field(
        description="Next fire time, in the schedule's time zone."
    )
    last_run_at: datetime | None
    created_at: datetime
    preset_id: strawberry.ID | None = strawberry.field(
        default=None, description="The preset its runs start from, if any."
    )

    @classmethod
    def from_model(cls, row: models.Schedule) -> Schedule:
        return cls(
            id=strawberry.ID(str(row.id)),
            name=row.name,
            graph_id=strawberry.ID(str(row.graph_id)),
            graph_version=row.graph_version,
            cron=row.cron,
            timezone=row.timezone,
            inputs=row.inputs or {},
            next_run_time=next_run_time(row),
            last_run_at=row.last_run_at,
            created_at=row.created_at,
            preset_id=strawberry.ID(str(row.preset_id)) if row.preset_id else None,  # type: ignore[attr-defined]
        )
