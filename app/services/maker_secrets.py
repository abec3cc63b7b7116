"""What a store agent's maker keeps from its users, in the runs they make of it.

A store agent's nodes are shown to its users without secret-looking defaults
(graph_schemas.export_defaults). Its runs carry those defaults too: in each node
execution's inputs, and in whatever a node makes of them (an echoed header, a
dictionary built from them, an error quoting them). For a run of a graph version
its runner does not own, every such text of that version and of the sub-graph
versions it runs is shown as "***" wherever the run is read: node inputs,
outputs and errors, the run's outputs and error, live events, the shared view.
The run itself uses the real values; only what people read is masked.
"""

from __future__ import annotations

import uuid
from typing import Any

from app.blocks.credentials import redact, redact_text
from app.models import Graph, Node
from app.services.graph_access import versions_query
from app.services.graph_schemas import secret_default_values
from app.services.graphs import sub_graphs

RunKey = tuple[uuid.UUID, uuid.UUID, int]  # (runner, graph id, graph version)


async def hidden_texts(keys: list[RunKey]) -> list[list[str]]:
    """For each (runner, graph id, version): the maker's secret-looking default texts
    that runner may not read, or [] when the runner owns that graph version."""
    pairs = list(dict.fromkeys((graph_id, version) for _, graph_id, version in keys))
    graphs = {
        (row.graph_id, row.version): row
        for row in (await Graph.filter(versions_query(pairs)) if pairs else [])
    }
    found: dict[tuple[uuid.UUID, int], list[str]] = {}
    answers = []
    for runner, graph_id, version in keys:
        graph = graphs.get((graph_id, version))
        if graph is None or graph.user_id == runner:  # type: ignore[attr-defined]
            answers.append([])
            continue
        if (graph_id, version) not in found:
            found[(graph_id, version)] = await _texts_of(graph)
        answers.append(found[(graph_id, version)])
    return answers


async def _texts_of(graph: Graph) -> list[str]:
    nodes = await Node.filter(graph_id=graph.id)
    children = await sub_graphs(graph.user_id, nodes)  # type: ignore[attr-defined]
    if children:
        nodes += await Node.filter(graph_id__in=[child.id for child in children])
    return secret_default_values(nodes)


def masked(value: Any, texts: list[str]) -> Any:
    return redact(value, texts) if texts else value


def masked_text(value: str | None, texts: list[str]) -> str | None:
    return redact_text(value, texts) if value and texts else value
