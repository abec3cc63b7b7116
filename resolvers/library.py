"""The library and the store: list, add, update and remove agents; rate store agents."""

from __future__ import annotations

from typing import Annotated

import strawberry

from app.context import Info
from app.services import library, store
from schema.permissions import CanReadGraph, SignedInUser
from schema.types.library import LibraryAgent, LibraryAgentConnection
from schema.types.store import StoreAgent


@strawberry.type
class LibraryQueries:
    @strawberry.field(
        permission_classes=[CanReadGraph],
        description=(
            "The user's own graphs and the store agents they added, newest activity "
            "(save, version move, run) first; search matches name and description."
        ),
    )
    async def library_agents(
        self,
        info: Info,
        search: str | None = None,
        first: Annotated[int, strawberry.argument(description="1 to 100.")] = 50,
        after: str | None = None,
    ) -> LibraryAgentConnection:
        page = await library.list_library(
            info.context.settings, await info.context.user_id(), search, first, after
        )
        return LibraryAgentConnection.from_page(page)


@strawberry.type
class LibraryMutations:
    @strawberry.mutation(
        permission_classes=[SignedInUser],
        description=(
            "Adds a store agent (a StoreAgent's id): its graph version becomes runnable "
            "(runs are the caller's) and readable. Adding it again changes nothing."
        ),
    )
    async def add_store_agent_to_library(
        self, info: Info, listing_id: strawberry.ID
    ) -> LibraryAgent:
        item = await library.add_store_agent(
            info.context.settings, await info.context.user_id(), listing_id
        )
        return LibraryAgent.from_item(item)

    @strawberry.mutation(
        permission_classes=[SignedInUser],
        description=(
            "Moves a store agent to another listed version (its presets and schedules "
            "follow), or an own graph to another version; marks it favorite or not."
        ),
    )
    async def update_library_agent(
        self,
        info: Info,
        id: strawberry.ID,
        version: int | None = None,
        is_favorite: bool | None = None,
    ) -> LibraryAgent:
        item = await library.update_library_agent(
            info.context.settings, await info.context.user_id(), id, version, is_favorite
        )
        return LibraryAgent.from_item(item)

    @strawberry.mutation(
        permission_classes=[SignedInUser],
        description=(
            "Removes a store agent with the caller's presets and schedules for it; "
            "own graphs are deleted with deleteGraph instead (CONFLICT)."
        ),
    )
    async def remove_library_agent(self, info: Info, id: strawberry.ID) -> strawberry.ID:
        removed = await library.remove_library_agent(await info.context.user_id(), id)
        return strawberry.ID(str(removed))

    @strawberry.mutation(
        permission_classes=[SignedInUser],
        description="Rates a store agent's listing 1 to 5; rating again changes the rating.",
    )
    async def rate_store_agent(
        self, info: Info, listing_id: strawberry.ID, score: int
    ) -> StoreAgent:
        item = await store.rate_store_agent(await info.context.user_id(), listing_id, score)
        return StoreAgent.from_recommendation(item)
