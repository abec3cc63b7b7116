"""Checking a graph against its blocks (SEMANTICS.md §6).

Errors are collected per node, by the node ids the client sent, as
pin -> message, so a client can point at what it drew. Nothing here writes.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from app.blocks.base import ERROR_PIN, Block
from app.blocks.registry import get_block
from app.blocks.triggers import WEBHOOK_TRIGGER_BLOCK_NAME
from app.models import Graph, Node

SUB_GRAPH_BLOCK_NAME = "SubGraph"
MAX_NODES = 1000
MAX_LINKS = 5000
MAX_NAME = 200
MAX_DESCRIPTION = 10_000


@dataclass
class NodeSpec:
    id: str
    block_id: str
    input_default: Any = field(default_factory=dict)
    metadata: Any = field(default_factory=dict)


@dataclass
class LinkSpec:
    source_id: str
    sink_id: str
    source_name: str
    sink_name: str
    is_static: bool = False


@dataclass
class GraphSpec:
    name: str
    nodes: list[NodeSpec]
    links: list[LinkSpec]
    description: str = ""
    id: str | None = None


@dataclass
class Validation:
    """The result of checking a graph: node errors, and a graph-level message."""

    node_errors: dict[str, dict[str, str]] = field(default_factory=dict)
    message: str | None = None

    @property
    def valid(self) -> bool:
        return not self.node_errors and self.message is None

    def add(self, node_id: str, pin: str, message: str) -> None:
        self.node_errors.setdefault(node_id, {}).setdefault(pin, message)

    def summary(self) -> str:
        if self.message:
            return self.message
        count = sum(len(pins) for pins in self.node_errors.values())
        return f"Graph is invalid: {count} problem(s) in {len(self.node_errors)} node(s)"


def parse_uuid(value: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except (TypeError, ValueError):
        return None


def is_sub_graph(block: Block | None) -> bool:
    return block is not None and block.name == SUB_GRAPH_BLOCK_NAME


def output_names(nodes: Iterable[Node]) -> list[str]:
    """The names of a stored graph's outputs (its AgentOutput nodes), in order."""
    names: list[str] = []
    for node in nodes:
        block = get_block(node.block_id)
        if block is not None and block.name == "AgentOutput":
            name = (node.input_default or {}).get("name")
            if isinstance(name, str) and name not in names:
                names.append(name)
    return names


class _SubGraphIndex:
    """Looks up the graph versions SubGraph nodes name, loading each once."""

    def __init__(self, user_id: uuid.UUID) -> None:
        self.user_id = user_id
        self._versions: dict[tuple[uuid.UUID, int], Graph | None] = {}
        self._nodes: dict[int, list[Node]] = {}

    async def version(self, graph_id: uuid.UUID, version: int) -> Graph | None:
        key = (graph_id, version)
        if key not in self._versions:
            self._versions[key] = await Graph.get_or_none(
                graph_id=graph_id, version=version, user_id=self.user_id
            )
        return self._versions[key]

    async def nodes(self, graph: Graph) -> list[Node]:
        if graph.id not in self._nodes:
            self._nodes[graph.id] = await Node.filter(graph_id=graph.id).order_by("position")
        return self._nodes[graph.id]

    async def includes(self, graph: Graph, target: uuid.UUID, seen: set[int]) -> bool:
        """Whether `graph` runs `target` anywhere below it."""
        if graph.id in seen:
            return False
        seen.add(graph.id)
        for node in await self.nodes(graph):
            if not is_sub_graph(get_block(node.block_id)):
                continue
            child_id = parse_uuid((node.input_default or {}).get("graph_id"))
            child_version = (node.input_default or {}).get("graph_version")
            if child_id is None or not isinstance(child_version, int):
                continue
            if child_id == target:
                return True
            child = await self.version(child_id, child_version)
            if child is not None and await self.includes(child, target, seen):
                return True
        return False


async def validate_graph(
    user_id: uuid.UUID, spec: GraphSpec, graph_id: uuid.UUID | None = None
) -> Validation:
    """Every check of §6; `graph_id` is the id the graph is (or will be) saved under."""
    result = Validation()
    if not spec.name.strip() or len(spec.name) > MAX_NAME:
        result.message = f"name must be 1 to {MAX_NAME} characters"
    elif len(spec.description or "") > MAX_DESCRIPTION:
        result.message = f"description is longer than {MAX_DESCRIPTION} characters"
    elif len(spec.nodes) > MAX_NODES or len(spec.links) > MAX_LINKS:
        result.message = f"at most {MAX_NODES} nodes and {MAX_LINKS} links"
    if result.message:
        return result

    blocks: dict[str, Block] = {}
    triggers: list[str] = []
    id_counts = Counter(node.id for node in spec.nodes)
    for node in spec.nodes:
        if id_counts[node.id] > 1:
            result.add(node.id, "id", "node id used more than once")
            continue
        block = get_block(node.block_id)
        if block is None:
            result.add(node.id, "blockId", f"unknown block {node.block_id}")
            continue
        if not isinstance(node.input_default, dict):
            result.add(node.id, "inputDefault", "must be an object")
            continue
        if not isinstance(node.metadata, dict):
            result.add(node.id, "metadata", "must be an object")
        blocks[node.id] = block
        if block.name == WEBHOOK_TRIGGER_BLOCK_NAME:
            triggers.append(node.id)
    for extra in triggers[1:]:
        # One trigger URL per graph: a delivery must know which node it feeds.
        result.add(extra, "blockId", "a graph has at most one WebhookTrigger")

    index = _SubGraphIndex(user_id)
    sub_graph_outputs: dict[str, list[str]] = {}
    for node in spec.nodes:
        block = blocks.get(node.id)
        if is_sub_graph(block):
            outputs = await _check_sub_graph(node, index, graph_id, result)
            if outputs is not None:
                sub_graph_outputs[node.id] = outputs

    linked_inputs: dict[str, set[str]] = {}
    known = set(id_counts)
    for link in spec.links:
        source, sink = blocks.get(link.source_id), blocks.get(link.sink_id)
        if link.sink_id not in known:
            result.add(link.source_id, link.source_name, f"links to unknown node {link.sink_id}")
            continue
        if link.source_id not in known:
            result.add(link.sink_id, link.sink_name, f"linked from unknown node {link.source_id}")
            continue
        if source is None or sink is None:
            continue  # the node itself is already reported
        source_pins = _output_pins(source, sub_graph_outputs.get(link.source_id))
        if source_pins is not None and link.source_name not in source_pins:
            result.add(
                link.sink_id,
                link.sink_name,
                f"{source.name} has no output pin {link.source_name!r}",
            )
            continue
        if link.sink_name not in sink.input_pins():
            result.add(link.sink_id, link.sink_name, f"{sink.name} has no input pin")
            continue
        linked_inputs.setdefault(link.sink_id, set()).add(link.sink_name)

    for node in spec.nodes:
        block = blocks.get(node.id)
        if block is not None:
            _check_inputs(node, block, linked_inputs.get(node.id, set()), result)
    return result


def _output_pins(block: Block, sub_graph_outputs: list[str] | None) -> set[str] | None:
    if is_sub_graph(block):
        # None: the sub-graph itself is invalid and already reported.
        return None if sub_graph_outputs is None else {*sub_graph_outputs, ERROR_PIN}
    return set(block.output_pins())


def _check_inputs(node: NodeSpec, block: Block, linked: set[str], result: Validation) -> None:
    defaults: dict[str, Any] = node.input_default
    for pin in defaults:
        if pin not in block.input_pins():
            result.add(node.id, pin, f"{block.name} has no input pin")
    try:
        block.Input.model_validate({k: v for k, v in defaults.items() if k in block.input_pins()})
        return
    except ValidationError as exc:
        errors = exc.errors()
    for error in errors:
        pin = str(error["loc"][0]) if error["loc"] else "inputDefault"
        if error["type"] == "missing":
            if pin not in linked:
                result.add(node.id, pin, "required input is not provided by a default or a link")
        elif pin not in linked:
            # A default that a link will replace at run time is not checked.
            result.add(node.id, pin, error["msg"])


async def _check_sub_graph(
    node: NodeSpec, index: _SubGraphIndex, graph_id: uuid.UUID | None, result: Validation
) -> list[str] | None:
    """The sub-graph's output names, or None (with node errors) when it cannot run."""
    defaults = node.input_default
    child_id = parse_uuid(defaults.get("graph_id"))
    version = defaults.get("graph_version")
    if child_id is None:
        result.add(node.id, "graph_id", "must name one of your graphs")
        return None
    if not isinstance(version, int) or isinstance(version, bool):
        result.add(node.id, "graph_version", "must be a version number")
        return None
    if graph_id is not None and child_id == graph_id:
        result.add(node.id, "graph_id", "a graph cannot include itself")
        return None
    child = await index.version(child_id, version)
    if child is None:
        result.add(node.id, "graph_id", f"no graph {child_id} version {version} of yours")
        return None
    if graph_id is not None and await index.includes(child, graph_id, set()):
        result.add(node.id, "graph_id", "the sub-graph includes this graph: a cycle")
        return None
    return output_names(await index.nodes(child))
