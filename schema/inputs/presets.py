from __future__ import annotations

import strawberry
from strawberry.scalars import JSON

from app.services.presets import PresetSpec


def _given(value):
    return None if value is strawberry.UNSET else value


@strawberry.input
class PresetInput:
    graph_id: strawberry.ID
    graph_version: int | None = strawberry.field(
        default=strawberry.UNSET, description="The active (library) version when left out."
    )
    name: str
    description: str | None = strawberry.UNSET
    inputs: JSON | None = strawberry.UNSET
    credentials_inputs: JSON | None = strawberry.field(
        default=strawberry.UNSET, description="Credentials field to stored credentials id."
    )

    def to_spec(self) -> PresetSpec:
        return PresetSpec(
            name=self.name,
            description=_given(self.description),
            graph_version=_given(self.graph_version),
            inputs=_given(self.inputs),
            credentials_inputs=_given(self.credentials_inputs),
        )


@strawberry.input(description="Only the fields given change; the result is checked like a run.")
class PresetUpdateInput:
    graph_version: int | None = strawberry.UNSET
    name: str | None = strawberry.UNSET
    description: str | None = strawberry.UNSET
    inputs: JSON | None = strawberry.UNSET
    credentials_inputs: JSON | None = strawberry.UNSET

    def to_spec(self) -> PresetSpec:
        return PresetSpec(
            name=_given(self.name),
            description=_given(self.description),
            graph_version=_given(self.graph_version),
            inputs=_given(self.inputs),
            credentials_inputs=_given(self.credentials_inputs),
        )
