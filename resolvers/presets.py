"""Presets: saved inputs and credentials for a graph version."""

from __future__ import annotations

import strawberry

from app.context import Info
from app.services import presets
from schema.inputs.presets import PresetInput, PresetUpdateInput
from schema.permissions import CanReadGraph, SignedInUser
from schema.types.presets import Preset


@strawberry.type
class PresetQueries:
    @strawberry.field(
        permission_classes=[CanReadGraph],
        description="The user's presets (of one graph when graphId is given), newest first.",
    )
    async def presets(self, info: Info, graph_id: strawberry.ID | None = None) -> list[Preset]:
        rows = await presets.list_presets(await info.context.user_id(), graph_id)
        return [Preset.from_model(row) for row in rows]


@strawberry.type
class PresetMutations:
    @strawberry.mutation(
        permission_classes=[SignedInUser],
        description="Checked like a run: every required input and credentials must be there.",
    )
    async def create_preset(self, info: Info, input: PresetInput) -> Preset:
        row = await presets.create_preset(
            info.context.settings, await info.context.user_id(), input.graph_id, input.to_spec()
        )
        return Preset.from_model(row)

    @strawberry.mutation(permission_classes=[SignedInUser])
    async def update_preset(
        self, info: Info, id: strawberry.ID, input: PresetUpdateInput
    ) -> Preset:
        row = await presets.update_preset(
            info.context.settings, await info.context.user_id(), id, input.to_spec()
        )
        return Preset.from_model(row)

    @strawberry.mutation(
        permission_classes=[SignedInUser],
        description="Returns the deleted id; its trigger and schedules go with it.",
    )
    async def delete_preset(self, info: Info, id: strawberry.ID) -> strawberry.ID:
        return strawberry.ID(str(await presets.delete_preset(await info.context.user_id(), id)))
