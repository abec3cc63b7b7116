"""The library: a user's own graphs and the store agents they added (§6 library entries).

Adding a store agent grants its listed graph version, and the sub-graph versions it
runs, to the user: readable (nodes without secrets) and runnable as the user, who
pays for and owns those runs. Nothing else of the creator's becomes visible.
Updating moves the entry, its grants and the user's presets to another listed
version; removing takes the entry, its grants, presets and schedules away.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from tortoise.exceptions import IntegrityError
from tortoise.expressions import Q
from tortoise.transactions import in_transaction

from app.blocks.registry import get_block
from app.errors import AppError, ErrorCode, bad_input, not_found
from app.models import (
    Graph,
    LibraryAgent,
    Node,
    OnboardingStep,
    Preset,
    Schedule,
    StoreListingVersion,
    User,
)
from app.services import graph_access, graphs, onboarding
from app.services.graph_validation import parse_uuid
from app.services.graphs_cache import graphs_changed
from app.services.pagination import check_page_size, encode_cursor, rows_after
from app.settings import Settings

MAX_LIBRARY_PAGE = 100
MAX_SEARCH = 200


@dataclass
class LibraryItem:
    entry: LibraryAgent
    graph: Graph | None
    is_own: bool
    creator: str
    can_run: bool
    # The newest version the entry could move to (listed, or the owner's active one).
    latest_version: int | None

    @property
    def update_available(self) -> bool:
        return self.latest_version is not None and self.latest_version > self.entry.graph_version


@dataclass
class LibraryPage:
    items: list[LibraryItem]
    total: int
    has_next: bool

    @staticmethod
    def cursor(item: LibraryItem) -> str:
        return encode_cursor(item.entry.activity_at, item.entry.id)


# ------------------------------------------------------------------ reading


async def _fill_old_entries(user_id: uuid.UUID) -> None:
    """Entries made before the library kept names and activity get them once."""
    for entry in await LibraryAgent.filter(
        Q(name="") | Q(activity_at__isnull=True), user_id=user_id
    ):
        graph = await Graph.get_or_none(graph_id=entry.graph_id, version=entry.graph_version)
        await LibraryAgent.filter(id=entry.id).update(
            name=graph.name if graph else entry.name or "(deleted)",
            description=graph.description if graph else entry.description,
            activity_at=entry.activity_at or entry.updated_at,
        )


async def list_library(
    settings: Settings, user_id: uuid.UUID, search: str | None, first: int, after: str | None
) -> LibraryPage:
    """Newest activity (save, version move, run) first; `search` matches name or description."""
    check_page_size(first, MAX_LIBRARY_PAGE)
    await _fill_old_entries(user_id)
    base = LibraryAgent.filter(user_id=user_id)
    if search is not None and search.strip():
        text = search.strip()
        if len(text) > MAX_SEARCH:
            raise bad_input(f"search is longer than {MAX_SEARCH} characters", field="search")
        base = base.filter(Q(name__icontains=text) | Q(description__icontains=text))
    query = base
    if after:
        query = query.filter(rows_after(after, time_field="activity_at"))
    rows = await query.order_by("-activity_at", "-id").limit(first + 1)
    items = await describe(settings, user_id, rows[:first])
    return LibraryPage(items, await base.count(), len(rows) > first)


async def describe(
    settings: Settings, user_id: uuid.UUID, entries: list[LibraryAgent]
) -> list[LibraryItem]:
    """Library items for entries, in a constant number of queries."""
    if not entries:
        return []
    graphs_by_key = {
        (g.graph_id, g.version): g
        for g in await Graph.filter(
            graph_access.versions_query([(e.graph_id, e.graph_version) for e in entries])
        )
    }
    nodes: dict[int, list[Node]] = {}
    for node in await Node.filter(graph_id__in=[g.id for g in graphs_by_key.values()]):
        nodes.setdefault(node.graph_id, []).append(node)  # type: ignore[attr-defined]
    listed = {
        v.id: v
        for v in await StoreListingVersion.filter(
            id__in=[e.listing_version_id for e in entries if e.listing_version_id]
        )
    }
    latest_listed: dict[uuid.UUID, int] = {}
    for version in await StoreListingVersion.filter(
        listing_id__in={v.listing_id for v in listed.values()},  # type: ignore[attr-defined]
        is_approved=True,
        listing__is_deleted=False,
    ):
        listing_id = version.listing_id  # type: ignore[attr-defined]
        latest_listed[listing_id] = max(latest_listed.get(listing_id, 0), version.graph_version)
    own_active = {
        g.graph_id: g.version
        for g in await Graph.filter(
            user_id=user_id,
            is_active=True,
            graph_id__in=[e.graph_id for e in entries if e.listing_version_id is None],
        ).only("id", "graph_id", "version")
    }
    me = await User.get_or_none(id=user_id).only("id", "name", "email")
    my_name = (me.name or me.email.split("@")[0]) if me else ""
    items = []
    for entry in entries:
        graph = graphs_by_key.get((entry.graph_id, entry.graph_version))
        listing_version = listed.get(entry.listing_version_id) if entry.listing_version_id else None
        is_own = entry.listing_version_id is None
        if is_own:
            latest = own_active.get(entry.graph_id)
        elif listing_version is not None:
            latest = latest_listed.get(listing_version.listing_id)  # type: ignore[attr-defined]
        else:
            latest = None
        items.append(
            LibraryItem(
                entry=entry,
                graph=graph,
                is_own=is_own,
                creator=my_name if is_own else (listing_version.creator if listing_version else ""),
                can_run=graph is not None and _blocks_usable(settings, nodes.get(graph.id, [])),
                latest_version=latest,
            )
        )
    return items


def _blocks_usable(settings: Settings, nodes: list[Node]) -> bool:
    for node in nodes:
        block = get_block(node.block_id)
        if block is None or block.is_disabled(settings):
            return False
    return True


async def _own_entry(user_id: uuid.UUID, entry_id: str) -> LibraryAgent:
    parsed = parse_uuid(entry_id)
    entry = await LibraryAgent.get_or_none(id=parsed, user_id=user_id) if parsed else None
    if entry is None:
        raise not_found("Library agent")
    return entry


async def library_item(settings: Settings, user_id: uuid.UUID, entry_id: str) -> LibraryItem:
    [item] = await describe(settings, user_id, [await _own_entry(user_id, entry_id)])
    return item


# ------------------------------------------------------------------ changing


async def _listed(listing_version_id: str) -> tuple[StoreListingVersion, Graph]:
    """An approved version of a live listing and its graph version, else NOT_FOUND."""
    parsed = parse_uuid(listing_version_id)
    version = (
        await StoreListingVersion.get_or_none(
            id=parsed, is_approved=True, listing__is_deleted=False
        )
        if parsed
        else None
    )
    graph = (
        await Graph.get_or_none(graph_id=version.graph_id, version=version.graph_version)
        if version
        else None
    )
    if version is None or graph is None:
        raise not_found("Store agent")
    return version, graph


async def _grants_for(graph: Graph) -> list[tuple[uuid.UUID, int]]:
    """The listed version and every sub-graph version it runs, at any depth."""
    nodes = await Node.filter(graph_id=graph.id)
    children = await graphs.sub_graphs(graph.user_id, nodes)  # type: ignore[attr-defined]
    return [(graph.graph_id, graph.version), *((c.graph_id, c.version) for c in children)]


async def add_store_agent(
    settings: Settings, user_id: uuid.UUID, listing_version_id: str
) -> LibraryItem:
    """Idempotent: an agent already in the library (or the user's own) stays as it is."""
    listed, graph = await _listed(listing_version_id)
    entry = await LibraryAgent.get_or_none(user_id=user_id, graph_id=graph.graph_id)
    if entry is None and graph.user_id != user_id:  # type: ignore[attr-defined]
        grants = await _grants_for(graph)
        try:
            async with in_transaction() as conn:
                entry = await LibraryAgent.create(
                    id=uuid.uuid4(),
                    user_id=user_id,
                    graph_id=graph.graph_id,
                    graph_version=graph.version,
                    settings=dict(graphs.DEFAULT_LIBRARY_SETTINGS),
                    listing_version_id=listed.id,
                    **graphs.library_fields(graph),
                    using_db=conn,
                )
                await graph_access.replace_grants(conn, entry, grants)
            await graphs_changed(user_id)
        except IntegrityError:  # added by a concurrent request
            entry = None
    await onboarding.complete_step(settings, user_id, OnboardingStep.MARKETPLACE_ADD_AGENT)
    if entry is None:
        entry = await LibraryAgent.get_or_none(user_id=user_id, graph_id=graph.graph_id)
    if entry is None:  # added by a concurrent request and removed by another
        raise AppError(ErrorCode.CONFLICT, "The library changed meanwhile; retry")
    return (await describe(settings, user_id, [entry]))[0]


async def update_library_agent(
    settings: Settings,
    user_id: uuid.UUID,
    entry_id: str,
    version: int | None,
    is_favorite: bool | None,
) -> LibraryItem:
    entry = await _own_entry(user_id, entry_id)
    if version is not None and version != entry.graph_version:
        if entry.listing_version_id is None:
            await graphs.set_active_version(user_id, str(entry.graph_id), version)
        else:
            await _move_to_listed_version(entry, version)
    if is_favorite is not None:
        await LibraryAgent.filter(id=entry.id).update(is_favorite=is_favorite)
    await graphs_changed(user_id)
    return await library_item(settings, user_id, entry_id)


async def _move_to_listed_version(entry: LibraryAgent, version: int) -> None:
    current = await StoreListingVersion.get_or_none(id=entry.listing_version_id)
    target = (
        await StoreListingVersion.filter(
            listing_id=current.listing_id,  # type: ignore[attr-defined]
            graph_version=version,
            is_approved=True,
            listing__is_deleted=False,
        )
        .order_by("-version")
        .first()
        if current
        else None
    )
    if target is None:
        raise not_found("Listed version")
    _, graph = await _listed(str(target.id))
    grants = await _grants_for(graph)
    async with in_transaction() as conn:
        await _lock_entry(conn, entry)
        await (
            LibraryAgent.filter(id=entry.id)
            .using_db(conn)
            .update(
                graph_version=graph.version,
                listing_version_id=target.id,
                **graphs.library_fields(graph),
            )
        )
        await graph_access.replace_grants(conn, entry, grants)
        # The user's presets and schedules follow (the old version is no longer
        # theirs to run); runs tell them if their inputs no longer fit.
        for model in (Preset, Schedule):
            await (
                model.filter(user_id=entry.user_id, graph_id=entry.graph_id)  # type: ignore[attr-defined]
                .using_db(conn)
                .update(graph_version=graph.version)
            )


async def _lock_entry(conn, entry: LibraryAgent) -> None:
    """Holds the entry's row until the transaction ends, so moves and removals of one
    entry happen one after the other; NOT_FOUND when it was removed meanwhile."""
    locked = await LibraryAgent.filter(id=entry.id).select_for_update().using_db(conn).first()
    if locked is None:
        raise not_found("Library agent")


async def remove_library_agent(user_id: uuid.UUID, entry_id: str) -> uuid.UUID:
    """A store agent leaves the library with its grants, presets and schedules."""
    entry = await _own_entry(user_id, entry_id)
    if entry.listing_version_id is None:
        raise AppError(
            ErrorCode.CONFLICT, "This is your own graph: delete it with deleteGraph instead"
        )
    async with in_transaction() as conn:
        await _lock_entry(conn, entry)
        await Preset.filter(user_id=user_id, graph_id=entry.graph_id).using_db(conn).delete()
        await Schedule.filter(user_id=user_id, graph_id=entry.graph_id).using_db(conn).delete()
        await LibraryAgent.filter(id=entry.id).using_db(conn).delete()
    await graphs_changed(user_id)
    return entry.id
