"""Schedules: create, list, delete (API keys need MANAGE_SCHEDULES)."""

from __future__ import annotations

import strawberry

from app.context import Info
from app.services import schedules
from schema.inputs.schedules import ScheduleInput
from schema.permissions import CanManageSchedules
from schema.types.schedules import Schedule


@strawberry.type
class ScheduleQueries:
    @strawberry.field(
        permission_classes=[CanManageSchedules],
        description="The user's schedules, of one graph when graphId is given; newest first.",
    )
    async def schedules(self, info: Info, graph_id: strawberry.ID | None = None) -> list[Schedule]:
        rows = await schedules.list_schedules(await info.context.user_id(), graph_id)
        return [Schedule.from_model(row) for row in rows]


@strawberry.type
class ScheduleMutations:
    @strawberry.mutation(
        permission_classes=[CanManageSchedules],
        description=(
            "Runs a graph version (the active one when left out, pinned from then on) "
            "as the caller on a cron in a time zone."
        ),
    )
    async def create_schedule(self, info: Info, input: ScheduleInput) -> Schedule:
        row = await schedules.create_schedule(
            info.context.settings, await info.context.user_id(), input.to_spec()
        )
        return Schedule.from_model(row)

    @strawberry.mutation(
        permission_classes=[CanManageSchedules], description="Returns the deleted schedule's id."
    )
    async def delete_schedule(self, info: Info, id: strawberry.ID) -> strawberry.ID:
        deleted = await schedules.delete_schedule(await info.context.user_id(), id)
        return strawberry.ID(str(deleted))
