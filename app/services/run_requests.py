"""What a run starts from once presets, library agents and stored credentials count
(executeGraph, schedules and webhook triggers all go through here).

- A preset gives its saved inputs and credentials ids; those given with the run win.
  Without a version the run uses the preset's.
- The graph may be the user's own or a version a store agent in their library grants;
  the run is the runner's either way (charged to them, visible only to them).
- Credentials ids are checked against the blocks of the graph and its sub-graphs.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from tortoise.expressions import F

from app.clock import utcnow
from app.errors import bad_input, not_found
from app.models import Graph, LibraryAgent, Node, Preset, StoreListing
from app.services import credentials
from app.services.graph_validation import Validation, parse_uuid
from app.services.graphs import get_graph, sub_graphs
from app.settings import Settings


@dataclass
class RunRequest:
    graph: Graph
    inputs: dict[str, Any]
    credentials_inputs: dict[str, Any]
    preset: Preset | None = None


async def get_preset(user_id: uuid.UUID, preset_id: str) -> Preset | None:
    parsed = parse_uuid(preset_id)
    return await Preset.get_or_none(id=parsed, user_id=user_id) if parsed else None


async def prepare(
    user_id: uuid.UUID,
    graph_id: str,
    version: int | None,
    inputs: Any,
    credentials_inputs: Any,
    preset_id: str | None = None,
) -> RunRequest:
    """The graph version to run (NOT_FOUND when the user can run no such thing) and
    the inputs and credentials it runs with."""
    preset = None
    if preset_id is not None:
        preset = await get_preset(user_id, preset_id)
        if preset is None:
            raise not_found("Preset")
        if parse_uuid(graph_id) != preset.graph_id:
            raise bad_input("The preset belongs to another graph", field="presetId")
        version = preset.graph_version if version is None else version
    graph = await get_graph(user_id, graph_id, version)
    if graph is None:
        raise not_found("Graph")
    if not isinstance(inputs, dict):
        raise bad_input("inputs must be an object", field="inputs")
    if not isinstance(credentials_inputs, dict):
        raise bad_input("credentialsInputs must be an object", field="credentialsInputs")
    if preset is not None:
        inputs = {**preset.inputs, **inputs}
        credentials_inputs = {**preset.credentials_inputs, **credentials_inputs}
    return RunRequest(graph, inputs, credentials_inputs, preset)


async def with_sub_graph_nodes(graph: Graph, nodes: list[Node]) -> list[Node]:
    """The nodes of a graph and of every graph it runs as a sub-graph."""
    children = await sub_graphs(graph.user_id, nodes)  # type: ignore[attr-defined]
    if not children:
        return nodes
    return [*nodes, *await Node.filter(graph_id__in=[child.id for child in children])]


async def check_credentials(
    settings: Settings,
    user_id: uuid.UUID,
    request: RunRequest,
    nodes: list[Node],
    result: Validation,
) -> None:
    """Node errors for the run's credentials mapping (see credentials.check_credentials)."""
    await credentials.check_credentials(
        settings,
        user_id,
        await with_sub_graph_nodes(request.graph, nodes),
        request.credentials_inputs,
        result,
    )


async def record_run(user_id: uuid.UUID, graph_id: uuid.UUID) -> None:
    """A run started: the library shows it as activity, the store counts it."""
    await LibraryAgent.filter(user_id=user_id, graph_id=graph_id).update(activity_at=utcnow())
    await StoreListing.filter(graph_id=graph_id).update(runs=F("runs") + 1)
