"""Graphs, their nodes and links, validation results and settings."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

import strawberry
from strawberry.scalars import JSON

from app import models
from app.context import Info
from app.services import graphs as graph_service
from app.services import trigger_setup
from app.services.blocks import BlockCatalog
from app.services.graph_rows import NodeRecord
from app.services.graph_validation import Validation
from schema.types.blocks import Block
from schema.types.pages import PageInfo
from schema.types.triggers import Trigger, TriggerDeliveryConnection

GraphSource = strawberry.enum(models.GraphSource, name="GraphSource")


@strawberry.type
class Node:
    id: strawberry.ID
    block_id: strawberry.ID
    input_default: JSON = strawberry.field(description="Values of input pins that no link feeds.")
    metadata: JSON
    # Found when the node is made (from the catalogue in memory), not by a
    # resolver: a resolver per node of a list of graphs cost ~10 % of the request.
    block: Block | None

    @classmethod
    def from_model(
        cls, row: models.Node | NodeRecord, catalog: BlockCatalog, for_export: bool = False
    ) -> Node:
        defaults = row.input_default or {}
        _, descriptor = catalog.get_loaded(str(row.block_id))
        return cls(
            id=row.id,
            block_id=row.block_id,
            input_default=graph_service.export_defaults(defaults) if for_export else defaults,
            metadata=row.metadata or {},
            block=Block.from_descriptor(descriptor) if descriptor else None,
        )


# Lists of graphs give app.services.graph_rows.LinkRecord as it is: its
# attributes are these fields (tests/test_graph_rows.py), and Link has no resolvers.
@strawberry.type
class Link:
    id: strawberry.ID
    source_id: strawberry.ID
    sink_id: strawberry.ID
    source_name: str
    sink_name: str
    is_static: bool


@strawberry.type
class GraphSettings:
    human_in_the_loop_safe_mode: bool = strawberry.field(
        description="Ask a person before running nodes marked sensitive."
    )
    id: strawberry.ID = strawberry.field(
        description="The graph's id: settings belong to the graph, not to one version."
    )

    @classmethod
    def from_dict(cls, graph_id: uuid.UUID | str, settings: dict) -> GraphSettings:
        return cls(
            human_in_the_loop_safe_mode=bool(settings.get("human_in_the_loop_safe_mode", False)),
            id=strawberry.ID(str(graph_id)),
        )


@strawberry.type
class Graph:
    id: strawberry.ID
    version: int
    is_active: bool
    name: str
    description: str
    created_at: datetime
    row_id: strawberry.Private[int]
    owner_id: strawberry.Private[uuid.UUID]
    for_export: strawberry.Private[bool] = False

    async def _nodes(self, info: Info) -> list[NodeRecord]:
        return await info.context.loaders.nodes.load(self.row_id)

    async def _is_owner(self, info: Info) -> bool:
        return await info.context.user_id() == self.owner_id

    @strawberry.field
    async def nodes(self, info: Info) -> list[Node]:
        # A store agent's nodes are read-only and never carry its creator's secrets.
        strip = self.for_export or not await self._is_owner(info)
        catalog = info.context.services.blocks
        await catalog.descriptors()  # in memory after the process's first read
        return [Node.from_model(n, catalog, strip) for n in await self._nodes(info)]

    @strawberry.field
    async def links(self, info: Info) -> list[Link]:
        # The records have Link's attributes, and Link has no resolvers: given
        # as they are (not copied into ~1,000 Link objects a page).
        return await info.context.loaders.links.load(self.row_id)  # type: ignore[return-value]

    @strawberry.field(description="JSON Schema of the graph's inputs (its input blocks).")
    async def input_schema(self, info: Info) -> JSON:
        return graph_service.input_schema(await self._nodes(info))

    @strawberry.field(description="JSON Schema of the graph's outputs (its output blocks).")
    async def output_schema(self, info: Info) -> JSON:
        return graph_service.output_schema(await self._nodes(info))

    @strawberry.field(
        description="JSON Schema of the credentials that its blocks and sub-graphs need."
    )
    async def credentials_input_schema(self, info: Info) -> JSON:
        nodes = await self._nodes(info)
        children = await graph_service.sub_graphs(self.owner_id, nodes)
        child_nodes = await info.context.loaders.nodes.load_many([c.id for c in children])
        return graph_service.credentials_input_schema(
            info.context.settings, [*nodes, *(node for group in child_nodes for node in group)]
        )

    @strawberry.field(description="Graphs that its sub-graph nodes run, at the versions they name.")
    async def sub_graphs(self, info: Info) -> list[Graph]:
        children = await graph_service.sub_graphs(self.owner_id, await self._nodes(info))
        return [Graph.from_model(child, self.for_export) for child in children]

    @strawberry.field
    async def settings(self, info: Info) -> GraphSettings | None:
        # The viewer's library entry: a store agent's settings are its user's own.
        entry = await info.context.loaders.library_entries.load(
            (await info.context.user_id(), uuid.UUID(str(self.id)))
        )
        return GraphSettings.from_dict(self.id, entry.settings) if entry else None

    @strawberry.field(
        description=(
            "The viewer's webhook trigger of this graph, when this version has a "
            "WebhookTrigger node (a store agent's trigger comes with a preset)."
        )
    )
    async def trigger(self, info: Info) -> Trigger | None:
        if trigger_setup.trigger_node(await self._nodes(info)) is None:
            return None
        row = await trigger_setup.graph_trigger(
            await info.context.user_id(), uuid.UUID(str(self.id))
        )
        return Trigger.from_model(row) if row else None

    @strawberry.field(
        description="Deliveries to the viewer's triggers of this graph and its presets."
    )
    async def trigger_deliveries(
        self,
        info: Info,
        first: Annotated[int, strawberry.argument(description="1 to 100.")] = 25,
        after: str | None = None,
    ) -> TriggerDeliveryConnection:
        page = await trigger_setup.list_deliveries(
            await info.context.user_id(), uuid.UUID(str(self.id)), first, after
        )
        return TriggerDeliveryConnection.from_page(page)

    @classmethod
    def from_model(cls, row: models.Graph, for_export: bool = False) -> Graph:
        return cls(
            id=row.graph_id,
            version=row.version,
            is_active=row.is_active,
            name=row.name,
            description=row.description,
            created_at=row.created_at,
            row_id=row.id,
            owner_id=row.user_id,  # type: ignore[attr-defined]
            for_export=for_export,
        )


@strawberry.type
class GraphEdge:
    cursor: str
    node: Graph


@strawberry.type
class GraphConnection:
    edges: list[GraphEdge]
    page_info: PageInfo
    total_count: int


@strawberry.type
class NodeError:
    node_id: strawberry.ID
    errors: JSON = strawberry.field(description="Input pin name to what is wrong with it.")


@strawberry.type
class GraphValidation:
    valid: bool
    message: str | None
    node_errors: list[NodeError]

    @classmethod
    def from_validation(cls, validation: Validation) -> GraphValidation:
        return cls(
            valid=validation.valid,
            message=None if validation.valid else validation.summary(),
            node_errors=[
                NodeError(node_id=node_id, errors=errors)
                for node_id, errors in validation.node_errors.items()
            ],
        )
