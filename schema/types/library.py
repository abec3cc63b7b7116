"""The library: a user's own graphs and the store agents they added."""

from __future__ import annotations

from datetime import datetime

import strawberry

from app.services.library import LibraryItem, LibraryPage
from schema.types.graphs import Graph
from schema.types.pages import PageInfo


@strawberry.type
class LibraryAgent:
    id: strawberry.ID
    graph_id: strawberry.ID
    graph_version: int = strawberry.field(description="The version this library runs.")
    name: str
    description: str
    creator: str
    is_created_by_user: bool = strawberry.field(
        description="The user's own graph (false: a store agent, read-only)."
    )
    is_favorite: bool
    can_run: bool = strawberry.field(
        description="Its version exists and every one of its blocks can run on this server."
    )
    update_available: bool = strawberry.field(
        description="A newer listed version exists (updateLibraryAgent moves to it)."
    )
    latest_version: int | None = strawberry.field(
        description="The newest listed version (a store agent) or the active one (own graph)."
    )
    store_agent_id: strawberry.ID | None = strawberry.field(
        description="The StoreAgent (listing version) a store agent was added from."
    )
    created_at: datetime
    updated_at: datetime = strawberry.field(description="Last save, version move or run.")
    graph: Graph | None = strawberry.field(description="The version it runs (nodes read-only).")

    @classmethod
    def from_item(cls, item: LibraryItem) -> LibraryAgent:
        entry = item.entry
        return cls(
            id=strawberry.ID(str(entry.id)),
            graph_id=strawberry.ID(str(entry.graph_id)),
            graph_version=entry.graph_version,
            name=entry.name,
            description=entry.description or "",
            creator=item.creator,
            is_created_by_user=item.is_own,
            is_favorite=entry.is_favorite,
            can_run=item.can_run,
            update_available=item.update_available,
            latest_version=item.latest_version,
            store_agent_id=strawberry.ID(str(entry.listing_version_id))
            if entry.listing_version_id
            else None,
            created_at=entry.created_at,
            updated_at=entry.activity_at or entry.updated_at,
            graph=Graph.from_model(item.graph) if item.graph else None,
        )


@strawberry.type
class LibraryAgentEdge:
    cursor: str
    node: LibraryAgent


@strawberry.type
class LibraryAgentConnection:
    edges: list[LibraryAgentEdge]
    page_info: PageInfo
    total_count: int

    @classmethod
    def from_page(cls, page: LibraryPage) -> LibraryAgentConnection:
        edges = [
            LibraryAgentEdge(cursor=page.cursor(item), node=LibraryAgent.from_item(item))
            for item in page.items
        ]
        return cls(
            edges=edges,
            page_info=PageInfo(
                has_next_page=page.has_next, end_cursor=edges[-1].cursor if edges else None
            ),
            total_count=page.total,
        )
