from __future__ import annotations

import strawberry
from strawberry.scalars import JSON

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
        )
