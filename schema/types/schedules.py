"""Schedules as clients see them: never the credentials they run with."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import Enum
from typing import Annotated

import strawberry
from strawberry.scalars import JSON

from app import models
from app.context import Info
from app.services import schedule_controls
from app.services.pagination import check_page_size
from app.services.schedules import next_run_time
from schema.types.pages import PageInfo


@strawberry.enum(description="What became of a due time of a schedule.")
class ScheduleFiringOutcome(Enum):
    FIRED = "FIRED"
    SKIPPED_NO_BALANCE = strawberry.enum_value(
        "SKIPPED_NO_BALANCE", description="The owner's balance was not above zero."
    )
    SKIPPED_INVALID = strawberry.enum_value(
        "SKIPPED_INVALID",
        description="The run could not start (e.g. its inputs no longer validate): see reason.",
    )


@strawberry.type
class ScheduleFiring:
    id: strawberry.ID
    due_at: datetime = strawberry.field(description="The cron time it was due, in UTC.")
    fired_at: datetime
    outcome: ScheduleFiringOutcome
    execution_id: strawberry.ID | None = strawberry.field(description="The run it started (FIRED).")
    reason: str | None = strawberry.field(description="Why it was skipped.")

    @classmethod
    def from_model(cls, row: models.ScheduleFiring) -> ScheduleFiring:
        return cls(
            id=strawberry.ID(str(row.id)),
            due_at=row.due_at,
            fired_at=row.fired_at,
            outcome=ScheduleFiringOutcome(str(row.outcome)),
            execution_id=strawberry.ID(str(row.execution_id)) if row.execution_id else None,
            reason=row.reason,
        )


@strawberry.type
class ScheduleFiringEdge:
    cursor: str
    node: ScheduleFiring


@strawberry.type
class ScheduleFiringConnection:
    edges: list[ScheduleFiringEdge]
    page_info: PageInfo
    total_count: int


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
        description="Next fire time, in the schedule's time zone; null while paused."
    )
    last_run_at: datetime | None
    created_at: datetime
    preset_id: strawberry.ID | None = strawberry.field(
        default=None, description="The preset its runs start from, if any."
    )
    is_paused: bool = strawberry.field(
        default=False, description="Paused schedules do not fire until resumed."
    )
    max_credits: int | None = strawberry.field(
        default=None, description="The budget (executeGraph's maxCredits) of each run it starts."
    )
    row: strawberry.Private[models.Schedule | None] = None

    @strawberry.field(
        description=(
            "Its next due times (1 to 50), in its time zone, daylight-saving changes "
            "included; empty while paused."
        )
    )
    def upcoming_run_times(self, count: int = 5) -> list[datetime]:
        assert self.row is not None
        return schedule_controls.upcoming_run_times(self.row, count)

    @strawberry.field(
        description=(
            "Its firing history, the latest due time first: runs it started and due times "
            "it skipped, with the reason. Pausing is not a firing."
        )
    )
    async def executions(
        self,
        info: Info,
        first: Annotated[int, strawberry.argument(description="1 to 100.")] = 25,
        after: str | None = None,
    ) -> ScheduleFiringConnection:
        schedule_id = uuid.UUID(str(self.id))
        if after is None:
            check_page_size(first, schedule_controls.MAX_FIRINGS_PAGE)
            page = await info.context.loaders.schedule_firings.load((schedule_id, first))
        else:
            page = await schedule_controls.list_firings(schedule_id, first, after)
        edges = [
            ScheduleFiringEdge(cursor=page.cursor(f), node=ScheduleFiring.from_model(f))
            for f in page.firings
        ]
        return ScheduleFiringConnection(
            edges=edges,
            page_info=PageInfo(
                has_next_page=page.has_next, end_cursor=edges[-1].cursor if edges else None
            ),
            total_count=page.total,
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
            is_paused=row.is_paused,
            max_credits=row.max_credits,
            row=row,
        )
