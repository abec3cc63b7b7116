"""Graphs: versions, the active one, library entries and settings (SEMANTICS.md §6)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from tortoise.exceptions import IntegrityError
from tortoise.expressions import Q
from tortoise.transactions import in_transaction

from app.blocks.registry import get_block
from app.errors import AppError, ErrorCode, bad_input, not_found
from app.models import (
    Graph,
    GraphSource,
    LibraryAgent,
    Link,
    Node,
    OnboardingStep,
    Schedule,
)
from app.services import onboarding
from app.services.graph_validation import (
    GraphSpec,
    Validation,
    is_sub_graph,
    parse_uuid,
    validate_graph,
)
from app.services.pagination import check_page_size, decode_cursor, encode_cursor
from app.settings import Settings

DEFAULT_LIBRARY_SETTINGS = {"human_in_the_loop_safe_mode": True}
MAX_GRAPHS_PAGE = 100
# Keys (pin names, or keys nested in a default such as HTTP headers) whose values
# are secrets or credential ids: never exported.
_SECRET_MARKERS = (
    "credential",
    "api_key",
    "apikey",
    "api-key",
    "password",
    "secret",
    "token",
    "authorization",
    "cookie",
)


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
            using_db=conn,
        )
    if source == GraphSource.BUILDER:
        await onboarding.complete_step(settings, user_id, OnboardingStep.BUILDER_SAVE_AGENT)
    elif source == GraphSource.LIBRARY:
        # A store agent saved into the library: the server sees the add itself.
        await onboarding.complete_step(settings, user_id, OnboardingStep.MARKETPLACE_ADD_AGENT)
    return graph


async def _owned_ids(user_id: uuid.UUID, graph_id: str) -> uuid.UUID:
    parsed = parse_uuid(graph_id)
    if parsed is None or not await Graph.filter(graph_id=parsed, user_id=user_id).exists():
        raise not_found("Graph")
    return parsed


async def update_graph(user_id: uuid.UUID, graph_id: str, spec: GraphSpec) -> Graph:
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
            await (
                LibraryAgent.filter(user_id=user_id, graph_id=parsed)
                .using_db(conn)
                .update(graph_version=version)
            )
    except IntegrityError as exc:  # SQLite has no row locks: two saves raced
        raise AppError(ErrorCode.CONFLICT, "The graph was saved concurrently; retry") from exc
    return graph


async def delete_graph(user_id: uuid.UUID, graph_id: str) -> int:
    """Every version, its schedules and library entry; the ledger keeps its rows."""
    parsed = await _owned_ids(user_id, graph_id)
    async with in_transaction() as conn:
        deleted = await Graph.filter(graph_id=parsed, user_id=user_id).using_db(conn).delete()
        await Schedule.filter(graph_id=parsed, user_id=user_id).using_db(conn).delete()
        await LibraryAgent.filter(graph_id=parsed, user_id=user_id).using_db(conn).delete()
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
        await (
            LibraryAgent.filter(user_id=user_id, graph_id=parsed)
            .using_db(conn)
            .update(graph_version=version)
        )
    target.is_active = True
    return target


async def update_settings(
    user_id: uuid.UUID, graph_id: str, changes: dict[str, Any]
) -> dict[str, Any]:
    parsed = await _owned_ids(user_id, graph_id)
    entry = await LibraryAgent.get_or_none(user_id=user_id, graph_id=parsed)
    if entry is None:
        active = await Graph.get(graph_id=parsed, is_active=True)
        entry = await LibraryAgent.create(
            user_id=user_id,
            graph_id=parsed,
            graph_version=active.version,
            settings=dict(DEFAULT_LIBRARY_SETTINGS),
        )
    entry.settings = {**DEFAULT_LIBRARY_SETTINGS, **entry.settings, **changes}
    await entry.save(update_fields=["settings", "updated_at"])
    return entry.settings


async def get_graph(user_id: uuid.UUID, graph_id: str, version: int | None = None) -> Graph | None:
    parsed = parse_uuid(graph_id)
    if parsed is None:
        return None
    query = Graph.filter(graph_id=parsed, user_id=user_id)
    query = query.filter(version=version) if version is not None else query.filter(is_active=True)
    return await query.first()


async def graph_versions(user_id: uuid.UUID, graph_id: str) -> list[Graph]:
    parsed = parse_uuid(graph_id)
    if parsed is None:
        return []
    return await Graph.filter(graph_id=parsed, user_id=user_id).order_by("-version")


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
        cursor = decode_cursor(after)
        graph_id = parse_uuid(cursor.row_id)
        if graph_id is None:
            raise bad_input("Invalid cursor", field="after")
        # One active version per graph, so (created_at, graph_id) orders them all.
        query = query.filter(
            Q(created_at__lt=cursor.created_at)
            | Q(created_at=cursor.created_at, graph_id__lt=graph_id)
        )
    rows = await query.order_by("-created_at", "-graph_id").limit(first + 1)
    total = await base.count()
    return GraphPage(graphs=rows[:first], total=total, has_next=len(rows) > first)


def input_schema(nodes: list[Node]) -> dict[str, Any]:
    """JSON Schema of a graph's inputs: one property per AgentInput node."""
    properties: dict[str, Any] = {}
    required: list[str] = []
    for node in nodes:
        block = get_block(node.block_id)
        if block is None or block.name != "AgentInput":
            continue
        defaults = node.input_default or {}
        name = defaults.get("name")
        if not isinstance(name, str) or name in properties:
            continue
        prop: dict[str, Any] = {"title": name, **_json_type(defaults.get("type", "any"))}
        if defaults.get("description"):
            prop["description"] = defaults["description"]
        if defaults.get("value") is not None:
            prop["default"] = defaults["value"]
        else:
            required.append(name)
        properties[name] = prop
    return {"type": "object", "properties": properties, "required": required}


def output_schema(nodes: list[Node]) -> dict[str, Any]:
    """JSON Schema of a graph's outputs: one property per AgentOutput name."""
    properties: dict[str, Any] = {}
    for node in nodes:
        block = get_block(node.block_id)
        if block is None or block.name != "AgentOutput":
            continue
        defaults = node.input_default or {}
        name = defaults.get("name")
        if isinstance(name, str) and name not in properties:
            prop: dict[str, Any] = {"title": name}
            if defaults.get("description"):
                prop["description"] = defaults["description"]
            properties[name] = prop
    return {"type": "object", "properties": properties}


def _json_type(kind: str) -> dict[str, Any]:
    if kind == "file":
        # Files travel as URIs: data: or a signed blob URL from POST /api/files.
        return {"type": "string", "format": "uri", "contentMediaType": "application/octet-stream"}
    if kind in ("string", "number", "integer", "boolean", "object", "array"):
        return {"type": kind}
    return {}


def credentials_input_schema(nodes: list[Node]) -> dict[str, Any]:
    """The credentials the given nodes' blocks declare (pass a graph's nodes and
    its sub-graphs' nodes), each once."""
    properties: dict[str, Any] = {}
    for node in nodes:
        block = get_block(node.block_id)
        if block is not None:
            for pin, schema in block.credentials_fields.items():
                properties.setdefault(pin, schema)
    return {"type": "object", "properties": properties, "required": sorted(properties)}


def export_defaults(value: Any) -> Any:
    """A node's defaults without secrets or credential ids, at any depth (forExport)."""
    if isinstance(value, dict):
        return {
            key: export_defaults(item)
            for key, item in value.items()
            if not any(marker in str(key).lower() for marker in _SECRET_MARKERS)
        }
    if isinstance(value, list):
        return [export_defaults(item) for item in value]
    return value


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
