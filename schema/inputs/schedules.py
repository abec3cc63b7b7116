from __future__ import annotations

import strawberry
from strawberry.scalars import JSON

from app.services.schedule_controls import KEEP, ScheduleChanges
from app.services.schedules import ScheduleSpec


def _given(value):
    return None if value is strawberry.UNSET else value


@strawberry.input
class ScheduleInput:
    graph_id: strawberry.ID
    graph_version: int | None = strawberry.UNSET
    name: str
    cron: str = strawberry.field(description="Five-field cron expression.")
    inputs: JSON | None = strawberry.UNSET
    credentials: JSON | None = strawberry.UNSET
    timezone: str | None = strawberry.field(
        default=strawberry.UNSET,
        description="IANA name; the user's time zone when left out, then UTC.",
    )
    preset_id: strawberry.ID | None = strawberry.field(
        default=strawberry.UNSET,
        description=(
            "Runs start from this preset's inputs and credentials (the schedule's own win) "
            "and run the preset's graph version."
        ),
    )
    max_credits: int | None = strawberry.field(
        default=strawberry.UNSET,
        description="Each run it starts gets this budget (executeGraph's maxCredits).",
    )

    def to_spec(self) -> ScheduleSpec:
        return ScheduleSpec(
            graph_id=str(self.graph_id),
            graph_version=_given(self.graph_version),
            name=self.name,
            cron=self.cron,
            inputs=_given(self.inputs),
            credentials=_given(self.credentials),
            timezone=_given(self.timezone),
            preset_id=None if _given(self.preset_id) is None else str(self.preset_id),
            max_credits=_given(self.max_credits),
        )


def _keep_unless_given(value):
    # Left out or null: the field keeps its value.
    return KEEP if value is strawberry.UNSET or value is None else value


@strawberry.input(
    description=(
        "Fields left out (or null) keep their value, except maxCredits, which null clears. "
        "The result is checked exactly like createSchedule's input."
    )
)
class ScheduleUpdateInput:
    name: str | None = strawberry.UNSET
    cron: str | None = strawberry.UNSET
    timezone: str | None = strawberry.UNSET
    inputs: JSON | None = strawberry.field(
        default=strawberry.UNSET, description="Replaces the schedule's inputs."
    )
    graph_version: int | None = strawberry.UNSET
    max_credits: int | None = strawberry.UNSET

    def to_changes(self) -> ScheduleChanges:
        return ScheduleChanges(
            name=_keep_unless_given(self.name),
            cron=_keep_unless_given(self.cron),
            timezone=_keep_unless_given(self.timezone),
            inputs=_keep_unless_given(self.inputs),
            graph_version=_keep_unless_given(self.graph_version),
            max_credits=KEEP if self.max_credits is strawberry.UNSET else self.max_credits,
        )
