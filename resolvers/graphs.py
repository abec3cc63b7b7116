"""Graphs: create, version, activate, validate, list, read, delete."""

from __future__ import annotations

import uuid
from typing import Annotated

import strawberry

from app.context import Info
from app.services import graphs
from app.services.graph_validation import validate_graph
from schema.inputs.graphs import GraphInput, GraphSettingsInput
from schema.permissions import CanReadGraph, SignedInUser
from schema.types.graphs import (
    Graph,
    GraphConnection,
    GraphEdge,
    GraphSettings,
    GraphSource,
    GraphValidation,
    PageInfo,
)


@strawberry.type
class GraphQueries:
    @strawberry.field(
        permission_classes=[CanReadGraph],
        description="The user's graphs, active versions only, newest first.",
    )
    async def graphs(
        self, info: Info, first: int = 50, after: str | None = None
    ) -> GraphConnection:
        page = await graphs.list_graphs(await info.context.user_id(), first, after)
        edges = [GraphEdge(cursor=page.cursor(g), node=Graph.from_model(g)) for g in page.graphs]
        return GraphConnection(
            edges=edges,
            page_info=PageInfo(
                has_next_page=page.has_next, end_cursor=edges[-1].cursor if edges else None
            ),
            total_count=page.total,
        )

    @strawberry.field(
        permission_classes=[CanReadGraph],
        description=(
            "A graph at a version; the active one where version is left out. "
            "Null when absent or not the caller's."
        ),
    )
    async def graph(
        self, info: Info, id: strawberry.ID, version: int | None = None, for_export: bool = False
    ) -> Graph | None:
        row = await graphs.get_graph(await info.context.user_id(), id, version)
        return Graph.from_model(row, for_export) if row else None

    @strawberry.field(permission_classes=[CanReadGraph])
    async def graph_versions(self, info: Info, id: strawberry.ID) -> list[Graph]:
        rows = await graphs.graph_versions(await info.context.user_id(), id)
        return [Graph.from_model(row) for row in rows]


@strawberry.type
class GraphMutations:
    @strawberry.mutation(permission_classes=[SignedInUser])
    async def create_graph(
        self,
        info: Info,
        graph: GraphInput,
        # Named apart in Python: `source` is a resolver argument of strawberry's own.
        graph_source: Annotated[GraphSource | None, strawberry.argument(name="source")] = None,
    ) -> Graph:
        row = await graphs.create_graph(
            info.context.settings, await info.context.user_id(), graph.to_spec(), graph_source
        )
        return Graph.from_model(row)

    @strawberry.mutation(
        permission_classes=[SignedInUser],
        description="Saves a new version; the caller's id in graph must match id or be absent.",
    )
    async def update_graph(self, info: Info, id: strawberry.ID, graph: GraphInput) -> Graph:
        row = await graphs.update_graph(
            info.context.settings, await info.context.user_id(), id, graph.to_spec()
        )
        return Graph.from_model(row)

    @strawberry.mutation(
        permission_classes=[SignedInUser], description="Returns how many versions were deleted."
    )
    async def delete_graph(self, info: Info, id: strawberry.ID) -> int:
        return await graphs.delete_graph(await info.context.user_id(), id)

    @strawberry.mutation(permission_classes=[SignedInUser])
    async def set_active_graph_version(self, info: Info, id: strawberry.ID, version: int) -> Graph:
        row = await graphs.set_active_version(await info.context.user_id(), id, version)
        return Graph.from_model(row)

    @strawberry.mutation(permission_classes=[SignedInUser])
    async def update_graph_settings(
        self, info: Info, id: strawberry.ID, settings: GraphSettingsInput
    ) -> GraphSettings:
        changes = {}
        if settings.human_in_the_loop_safe_mode not in (None, strawberry.UNSET):
            changes["human_in_the_loop_safe_mode"] = settings.human_in_the_loop_safe_mode
        saved = await graphs.update_settings(await info.context.user_id(), id, changes)
        return GraphSettings.from_dict(uuid.UUID(str(id)), saved)

    @strawberry.mutation(
        permission_classes=[SignedInUser],
        description="Checks a graph against its blocks without saving or running it.",
    )
    async def validate_graph(self, info: Info, graph: GraphInput) -> GraphValidation:
        spec = graph.to_spec()
        graph_id = graphs.parse_uuid(spec.id) if spec.id else None
        return GraphValidation.from_validation(
            await validate_graph(await info.context.user_id(), spec, graph_id)
        )
