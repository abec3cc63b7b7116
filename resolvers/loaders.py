"""Per-request DataLoaders: a list of graphs costs one query per relation,
however many graphs, nodes or links it holds (nodes and links as plain records,
app/services/graph_rows.py). Results come back in key order."""

from __future__ import annotations

import uuid
from collections import defaultdict
from functools import cached_property

from strawberry.dataloader import DataLoader

from app.models import LibraryAgent, NodeExecution, NodeReview
from app.services import (
    execution_sharing,
    executions,
    graph_rows,
    maker_secrets,
    reviews,
    run_slots,
    schedule_controls,
)
from app.services.graph_rows import LinkRecord, NodeRecord
from app.settings import get_settings


async def _library_entries(
    keys: list[tuple[uuid.UUID, uuid.UUID]],
) -> list[LibraryAgent | None]:
    users = {user_id for user_id, _ in keys}
    graphs = {graph_id for _, graph_id in keys}
    rows = await LibraryAgent.filter(user_id__in=users, graph_id__in=graphs)
    found = {(row.user_id, row.graph_id): row for row in rows}  # type: ignore[attr-defined]
    return [found.get(key) for key in keys]


async def _node_executions(execution_ids: list[uuid.UUID]) -> list[list[NodeExecution]]:
    # All of a run's node executions are returned (there is no `first`), so
    # one batch (every execution of a page, aliases included) loads at most
    # what one run may make: a page of large runs is refused, not loaded.
    at_most = get_settings().MAX_NODE_RUNS_PER_EXECUTION
    grouped = await executions.node_executions(list(dict.fromkeys(execution_ids)), at_most)
    return [grouped[execution_id] for execution_id in execution_ids]


async def _queue_positions(execution_ids: list[uuid.UUID]) -> list[int | None]:
    positions = await run_slots.queue_positions(list(dict.fromkeys(execution_ids)))
    return [positions.get(execution_id) for execution_id in execution_ids]


async def _pending_reviews(execution_ids: list[uuid.UUID]) -> list[list[NodeReview]]:
    grouped = await reviews.pending_reviews_of(list(dict.fromkeys(execution_ids)))
    return [grouped[execution_id] for execution_id in execution_ids]


async def _shared_executions(tokens: list[str]) -> list[tuple | None]:
    found = {
        token: await execution_sharing.shared_execution(token) for token in dict.fromkeys(tokens)
    }
    return [found[token] for token in tokens]


async def _schedule_firings(
    keys: list[tuple[uuid.UUID, int]],
) -> list[schedule_controls.FiringPage]:
    """First pages of firings, one statement per page size asked for."""
    by_size: dict[int, list[uuid.UUID]] = defaultdict(list)
    for schedule_id, first in keys:
        by_size[first].append(schedule_id)
    found = {}
    for first, ids in by_size.items():
        pages = await schedule_controls.first_pages(ids, first)
        found.update(
            {(schedule_id, first): page for schedule_id, page in zip(ids, pages, strict=True)}
        )
    return [found[key] for key in keys]


class Loaders:
    """Each loader is made on first use: most requests use none of them (issue 14)."""

    @cached_property
    def nodes(self) -> DataLoader[int, list[NodeRecord]]:
        return DataLoader(load_fn=graph_rows.nodes_by_graph)

    @cached_property
    def links(self) -> DataLoader[int, list[LinkRecord]]:
        return DataLoader(load_fn=graph_rows.links_by_graph)

    # Settings change, so websocket connections (long-lived contexts) must not cache them.
    @cached_property
    def library_entries(self) -> DataLoader[tuple[uuid.UUID, uuid.UUID], LibraryAgent | None]:
        return DataLoader(load_fn=_library_entries, cache=False)

    # A graph version's defaults never change, so neither do the texts it hides.
    @cached_property
    def maker_secrets(self) -> DataLoader[maker_secrets.RunKey, list[str]]:
        return DataLoader(load_fn=maker_secrets.hidden_texts)

    # By share token, once however many aliases ask: a shared run is read
    # anonymously, and its outputs may be megabytes. Not cached (its status
    # changes under a long-lived websocket context).
    @cached_property
    def shared_executions(self) -> DataLoader[str, tuple | None]:
        return DataLoader(load_fn=_shared_executions, cache=False)

    # Node executions change while a run goes on: never cached.
    @cached_property
    def node_executions(self) -> DataLoader[uuid.UUID, list[NodeExecution]]:
        return DataLoader(load_fn=_node_executions, cache=False)

    # A list of schedules with their history: one statement, not one per schedule.
    # Not cached (firings are added under a long-lived websocket context).
    @cached_property
    def schedule_firings(self) -> DataLoader[tuple[uuid.UUID, int], schedule_controls.FiringPage]:
        return DataLoader(load_fn=_schedule_firings, cache=False)

    # A page of executions asks for its queued runs' places together; they change
    # as runs start: never cached.
    @cached_property
    def queue_positions(self) -> DataLoader[uuid.UUID, int | None]:
        return DataLoader(load_fn=_queue_positions, cache=False)

    # Reviews are decided while a client watches: never cached.
    @cached_property
    def pending_reviews(self) -> DataLoader[uuid.UUID, list[NodeReview]]:
        return DataLoader(load_fn=_pending_reviews, cache=False)
