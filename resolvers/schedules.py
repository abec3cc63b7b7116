"""Schedules: create, list, pause, resume, update, delete (API keys need MANAGE_SCHEDULES)."""

from __future__ import annotations

import strawberry

from app.context import Info
from app.services import schedule_controls, schedules
from schema.inputs.schedules import ScheduleInput, ScheduleUpdateInput
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
        permission_classes=[CanManageSchedules],
        description=(
            "Changes a schedule; the result is checked like createSchedule's input and nothing "
            "changes unless it passes. A new cron or time zone takes effect from now."
        ),
    )
    async def update_schedule(
        self, info: Info, id: strawberry.ID, input: ScheduleUpdateInput
    ) -> Schedule:
        row = await schedule_controls.update_schedule(
            info.context.settings, await info.context.user_id(), id, input.to_changes()
        )
        return Schedule.from_model(row)

    @strawberry.mutation(
        permission_classes=[CanManageSchedules],
        description="Stops a schedule firing until resumed (no effect when already paused).",
    )
    async def pause_schedule(self, info: Info, id: strawberry.ID) -> Schedule:
        row = await schedule_controls.pause_schedule(await info.context.user_id(), id)
        return Schedule.from_model(row)

    @strawberry.mutation(
        permission_classes=[CanManageSchedules],
        description=(
            "Fires again from the first cron time after now: due times missed while paused "
            "are not fired (no effect when not paused)."
        ),
    )
    async def resume_schedule(self, info: Info, id: strawberry.ID) -> Schedule:
        row = await schedule_controls.resume_schedule(await info.context.user_id(), id)
        return Schedule.from_model(row)

    @strawberry.mutation(
        permission_classes=[CanManageSchedules], description="Returns the deleted schedule's id."
    )
    async def delete_schedule(self, info: Info, id: strawberry.ID) -> strawberry.ID:
        deleted = await schedules.delete_schedule(await info.context.user_id(), id)
        return strawberry.ID(str(deleted))
