"""The shape of the graph a run executes: its nodes, their blocks and the links."""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass, field

from app.blocks.base import Block, BlockError
from app.blocks.registry import get_block
from app.models import Execution, Graph, Link, Node


@dataclass
class Topology:
    nodes: dict[uuid.UUID, Node]
    blocks: dict[uuid.UUID, Block]
    links_from: dict[uuid.UUID, list[Link]]
    # sink node -> pin -> whether its link is static
    linked_pins: dict[uuid.UUID, dict[str, bool]] = field(default_factory=dict)

    @classmethod
    async def load(cls, execution: Execution) -> Topology:
        graph = await Graph.get_or_none(
            graph_id=execution.graph_id, version=execution.graph_version
        )
        if graph is None:
            raise BlockError("the graph version of this run no longer exists")
        nodes = {n.id: n for n in await Node.filter(graph_id=graph.id)}
        blocks = {}
        for node in nodes.values():
            block = get_block(node.block_id)
            if block is None:
                raise BlockError(f"block {node.block_id} no longer exists")
            blocks[node.id] = block
        topology = cls(nodes=nodes, blocks=blocks, links_from=defaultdict(list))
        for link in await Link.filter(graph_id=graph.id).order_by("position"):
            topology.links_from[link.source_id].append(link)
            pins = topology.linked_pins.setdefault(link.sink_id, {})
            pins[link.sink_name] = pins.get(link.sink_name, False) or link.is_static
        return topology

    def starting_nodes(self) -> list[Node]:
        """AgentInput nodes and nodes nothing links into run first."""
        return [
            node
            for node_id, node in self.nodes.items()
            if self.blocks[node_id].name == "AgentInput" or node_id not in self.linked_pins
        ]

    def static_sources(self) -> set[uuid.UUID]:
        """Nodes with a static link out: what they yielded stays for their sinks."""
        return {
            source
            for source, links in self.links_from.items()
            if any(link.is_static for link in links)
        }
