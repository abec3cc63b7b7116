"""Graphs: versions, the active one, library entries and settings (SEMANTICS.md §6)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from tortoise.exceptions import IntegrityError
from tortoise.expressions import Q
from tortoise.transactions import in_transaction

from app.blocks.registry import get_block
from app.clock import utcnow
from app.errors import AppError, ErrorCode, bad_input, not_found
from app.models import (
    Graph,
    GraphSource,
    LibraryAgent,
    Link,
    Node,
    OnboardingStep,
    Preset,
    Schedule,
    StoreListing,
    Trigger,
)
from app.services import onboarding, trigger_setup
from app.services.graph_access import granted_graph, granted_versions

# The JSON Schemas of a graph's inputs, outputs and credentials, and export; kept
# importable from here, where callers have always found them.
from app.services.graph_schemas import (  # noqa: F401
    credentials_input_schema,
    export_defaults,
    input_schema,
    output_schema,
)
from app.services.graph_validation import (
    GraphSpec,
    Validation,
    is_sub_graph,
    parse_uuid,
    validate_graph,
)
from app.services.graphs_cache import graphs_changed
from app.services.pagination import check_page_size, encode_cursor, rows_after
from app.settings import Settings

# Safe mode is off unless the user turns it on: on, every run of a sensitive block
# (HttpRequest, LLMCall, ReadFile, SubGraph) waits for a person (issue 15).
DEFAULT_LIBRARY_SETTINGS = {"human_in_the_loop_safe_mode": False}
MAX_GRAPHS_PAGE = 100


def validation_error(validation: Validation) -> AppError:
    return AppError(
        ErrorCode.GRAPH_VALIDATION_FAILED,
        validation.summary(),
        nodeErrors=validation.node_errors,
    )


async def _check_or_raise(user_id: uuid.UUID, spec: GraphSpec, graph_id: uuid.UUID) -> None:
    validation = await validate_graph(user_id, spec, graph_id)
    if not validation.valid:
        raise validation_error(validation)


async def _write_version(
    conn, user_id: uuid.UUID, graph_id: uuid.UUID, version: int, spec: GraphSpec
) -> Graph:
    """Store one version with fresh node ids; links follow the new ids."""
    graph = await Graph.create(
        graph_id=graph_id,
        version=version,
        is_active=True,
        user_id=user_id,
        name=spec.name.strip(),
        description=spec.description or "",
        using_db=conn,
    )
    new_ids = {node.id: uuid.uuid4() for node in spec.nodes}
    await Node.bulk_create(
        [
            Node(
                id=new_ids[node.id],
                graph_id=graph.id,
                block_id=uuid.UUID(node.block_id),
                input_default=node.input_default,
                metadata=node.metadata or {},
                position=position,
            )
            for position, node in enumerate(spec.nodes)
        ],
        using_db=conn,
    )
    static_sources = {
        node.id
        for node in spec.nodes
        if (block := get_block(node.block_id)) and block.static_output
    }
    await Link.bulk_create(
        [
            Link(
                id=uuid.uuid4(),
                graph_id=graph.id,
                source_id=new_ids[link.source_id],
                sink_id=new_ids[link.sink_id],
                source_name=link.source_name,
                sink_name=link.sink_name,
                # A static block's outputs are reused by every later run of its sinks.
                is_static=link.is_static or link.source_id in static_sources,
                position=position,
            )
            for position, link in enumerate(spec.links)
        ],
        using_db=conn,
    )
    return graph


async def create_graph(
    settings: Settings, user_id: uuid.UUID, spec: GraphSpec, source: GraphSource | None
) -> Graph:
    graph_id = uuid.uuid4()
    await _check_or_raise(user_id, spec, graph_id)
    async with in_transaction() as conn:
        graph = await _write_version(conn, user_id, graph_id, 1, spec)
        await LibraryAgent.create(
            user_id=user_id,
            graph_id=graph_id,
            graph_version=1,
            settings=dict(DEFAULT_LIBRARY_SETTINGS),
            **library_fields(graph),
            using_db=conn,
        )
    await graphs_changed(user_id)
    await _give_trigger(settings, user_id, graph_id, spec)
    if source == GraphSource.BUILDER:
        await onboarding.complete_step(settings, user_id, OnboardingStep.BUILDER_SAVE_AGENT)
    elif source == GraphSource.LIBRARY:
        # A store agent saved into the library: the server sees the add itself.
        await onboarding.complete_step(settings, user_id, OnboardingStep.MARKETPLACE_ADD_AGENT)
    return graph


def library_fields(graph: Graph) -> dict[str, Any]:
    """What a library entry keeps of the version it runs (for listing and search)."""
    return {"name": graph.name, "description": graph.description, "activity_at": utcnow()}


async def _move_library_entry(conn, user_id: uuid.UUID, graph: Graph) -> None:
    """The owner's library entry and presets follow the active version."""
    await (
        LibraryAgent.filter(user_id=user_id, graph_id=graph.graph_id)
        .using_db(conn)
        .update(graph_version=graph.version, **library_fields(graph))
    )
    await (
        Preset.filter(user_id=user_id, graph_id=graph.graph_id)
        .using_db(conn)
        .update(graph_version=graph.version)
    )


async def _give_trigger(
    settings: Settings, user_id: uuid.UUID, graph_id: uuid.UUID, spec: GraphSpec
) -> None:
    if any(trigger_setup.is_trigger_block(get_block(node.block_id)) for node in spec.nodes):
        await trigger_setup.ensure_trigger(settings, user_id, graph_id)


async def _owned_ids(user_id: uuid.UUID, graph_id: str) -> uuid.UUID:
    parsed = parse_uuid(graph_id)
    if parsed is None or not await Graph.filter(graph_id=parsed, user_id=user_id).exists():
        raise not_found("Graph")
    return parsed


async def update_graph(
    settings: Settings, user_id: uuid.UUID, graph_id: str, spec: GraphSpec
) -> Graph:
    parsed = await _owned_ids(user_id, graph_id)
    if spec.id is not None and parse_uuid(spec.id) != parsed:
        raise bad_input("graph.id must match id or be left out", field="graph.id")
    await _check_or_raise(user_id, spec, parsed)
    try:
        async with in_transaction() as conn:
            # Locking the versions serialises concurrent saves of one graph.
            rows = await Graph.filter(graph_id=parsed).select_for_update().using_db(conn)
            version = max(row.version for row in rows) + 1
            await Graph.filter(graph_id=parsed).using_db(conn).update(is_active=False)
            graph = await _write_version(conn, user_id, parsed, version, spec)
            await _move_library_entry(conn, user_id, graph)
    except IntegrityError as exc:  # SQLite has no row locks: two saves raced
        raise AppError(ErrorCode.CONFLICT, "The graph was saved concurrently; retry") from exc
    await graphs_changed(user_id)
    await _give_trigger(settings, user_id, parsed, spec)
    return graph


async def delete_graph(user_id: uuid.UUID, graph_id: str) -> int:
    """Every version, its schedules and library entry; the ledger keeps its rows."""
    parsed = await _owned_ids(user_id, graph_id)
    async with in_transaction() as conn:
        deleted = await Graph.filter(graph_id=parsed, user_id=user_id).using_db(conn).delete()
        await Schedule.filter(graph_id=parsed, user_id=user_id).using_db(conn).delete()
        await LibraryAgent.filter(graph_id=parsed, user_id=user_id).using_db(conn).delete()
        # Presets and triggers go too (deliveries and preset schedules cascade).
        await Trigger.filter(graph_id=parsed, user_id=user_id).using_db(conn).delete()
        await Preset.filter(graph_id=parsed, user_id=user_id).using_db(conn).delete()
        # Its store listing goes too: nobody could add or run it any more, so it is
        # neither recommended nor rated (users who added it keep an entry that cannot run).
        await (
            StoreListing.filter(graph_id=parsed, owner_id=user_id)
            .using_db(conn)
            .update(is_deleted=True)
        )
    await graphs_changed(user_id)
    return deleted


async def set_active_version(user_id: uuid.UUID, graph_id: str, version: int) -> Graph:
    parsed = await _owned_ids(user_id, graph_id)
    async with in_transaction() as conn:
        target = await Graph.filter(graph_id=parsed, version=version).using_db(conn).first()
        if target is None:
            raise not_found("Graph version")
        await (
            Graph.filter(graph_id=parsed)
            .exclude(id=target.id)
            .using_db(conn)
            .update(is_active=False)
        )
        await Graph.filter(id=target.id).using_db(conn).update(is_active=True)
        await _move_library_entry(conn, user_id, target)
    await graphs_changed(user_id)
    target.is_active = True
    return target


async def update_settings(
    user_id: uuid.UUID, graph_id: str, changes: dict[str, Any]
) -> dict[str, Any]:
    # A store agent in the library has settings of its own too.
    parsed = parse_uuid(graph_id)
    entry = await LibraryAgent.get_or_none(user_id=user_id, graph_id=parsed) if parsed else None
    if entry is None:
        parsed = await _owned_ids(user_id, graph_id)
        active = await Graph.get(graph_id=parsed, is_active=True)
        entry = await LibraryAgent.create(
            user_id=user_id,
            graph_id=parsed,
            graph_version=active.version,
            settings=dict(DEFAULT_LIBRARY_SETTINGS),
            **library_fields(active),
        )
    entry.settings = {**DEFAULT_LIBRARY_SETTINGS, **entry.settings, **changes}
    await entry.save(update_fields=["settings", "updated_at"])
    await graphs_changed(user_id)
    return entry.settings


async def get_graph(user_id: uuid.UUID, graph_id: str, version: int | None = None) -> Graph | None:
    """The user's own graph, or a version a store agent in their library grants."""
    parsed = parse_uuid(graph_id)
    if parsed is None:
        return None
    query = Graph.filter(graph_id=parsed, user_id=user_id)
    query = query.filter(version=version) if version is not None else query.filter(is_active=True)
    return await query.first() or await granted_graph(user_id, parsed, version)


async def graph_versions(user_id: uuid.UUID, graph_id: str) -> list[Graph]:
    parsed = parse_uuid(graph_id)
    if parsed is None:
        return []
    own = await Graph.filter(graph_id=parsed, user_id=user_id).order_by("-version")
    return own or await granted_versions(user_id, parsed)


@dataclass
class GraphPage:
    graphs: list[Graph]
    total: int
    has_next: bool

    def cursor(self, graph: Graph) -> str:
        # The graph's own id, not the row id: row ids count every user's graphs.
        return encode_cursor(graph.created_at, graph.graph_id)


async def list_graphs(user_id: uuid.UUID, first: int, after: str | None) -> GraphPage:
    """Active versions, newest first."""
    check_page_size(first, MAX_GRAPHS_PAGE)
    base = Graph.filter(user_id=user_id, is_active=True)
    query = base
    if after:
        # One active version per graph, so (created_at, graph_id) orders them all.
        query = query.filter(rows_after(after, id_field="graph_id"))
    rows = await query.order_by("-created_at", "-graph_id").limit(first + 1)
    total = await base.count()
    return GraphPage(graphs=rows[:first], total=total, has_next=len(rows) > first)


def sub_graph_refs(nodes: list[Node]) -> list[tuple[uuid.UUID, int]]:
    refs: list[tuple[uuid.UUID, int]] = []
    for node in nodes:
        if not is_sub_graph(get_block(node.block_id)):
            continue
        graph_id = parse_uuid((node.input_default or {}).get("graph_id"))
        version = (node.input_default or {}).get("graph_version")
        if graph_id is not None and isinstance(version, int) and (graph_id, version) not in refs:
            refs.append((graph_id, version))
    return refs


async def sub_graphs(user_id: uuid.UUID, nodes: list[Node]) -> list[Graph]:
    """Every graph version run below this graph, each once, nearest first."""
    found: list[Graph] = []
    seen: set[tuple[uuid.UUID, int]] = set()
    pending = sub_graph_refs(nodes)
    while pending:
        wanted = [ref for ref in pending if ref not in seen]
        seen.update(wanted)
        if not wanted:
            break
        query = Q()
        for graph_id, version in wanted:
            query |= Q(graph_id=graph_id, version=version)
        rows = await Graph.filter(query, user_id=user_id)
        found.extend(rows)
        child_nodes = await Node.filter(graph_id__in=[row.id for row in rows])
        pending = sub_graph_refs(child_nodes)
    return found
