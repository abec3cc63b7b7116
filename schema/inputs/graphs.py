from __future__ import annotations

import strawberry
from strawberry.scalars import JSON

from app.services.graph_validation import GraphSpec, LinkSpec, NodeSpec


@strawberry.input
class NodeInput:
    id: strawberry.ID = strawberry.field(
        description="Client-chosen; reassigned by the server on create and update, links follow."
    )
    block_id: strawberry.ID
    input_default: JSON | None = strawberry.UNSET
    metadata: JSON | None = strawberry.UNSET


@strawberry.input
class LinkInput:
    source_id: strawberry.ID
    sink_id: strawberry.ID
    source_name: str
    sink_name: str
    is_static: bool | None = False


@strawberry.input
class GraphInput:
    id: strawberry.ID | None = strawberry.UNSET
    name: str
    description: str | None = strawberry.UNSET
    nodes: list[NodeInput]
    links: list[LinkInput]

    def to_spec(self) -> GraphSpec:
        def given(value, default):
            return default if value is None or value is strawberry.UNSET else value

        return GraphSpec(
            id=given(self.id, None),
            name=self.name,
            description=given(self.description, ""),
            nodes=[
                NodeSpec(
                    id=str(node.id),
                    block_id=str(node.block_id),
                    input_default=given(node.input_default, {}),
                    metadata=given(node.metadata, {}),
                )
                for node in self.nodes
            ],
            links=[
                LinkSpec(
                    source_id=str(link.source_id),
                    sink_id=str(link.sink_id),
                    source_name=link.source_name,
                    sink_name=link.sink_name,
                    is_static=bool(link.is_static),
                )
                for link in self.links
            ],
        )


@strawberry.input
class GraphSettingsInput:
    human_in_the_loop_safe_mode: bool | None = strawberry.UNSET
