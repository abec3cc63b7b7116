"""Store agents: a published version of a listing, with its runs and rating."""

from __future__ import annotations

import uuid

import strawberry

from app.context import Info
from app.services import store
from app.services.store import RecommendedAgent


@strawberry.type
class StoreAgent:
    id: strawberry.ID
    graph_id: strawberry.ID
    graph_version: int
    name: str
    description: str
    creator: str
    runs: int = strawberry.field(description="Runs of its graph by anyone.")
    rating: float = strawberry.field(description="Mean of its users' ratings, 0 when unrated.")
    listing_id: strawberry.Private[uuid.UUID]

    @strawberry.field(description="The caller's own rating (1 to 5), null when not rated.")
    async def my_rating(self, info: Info) -> int | None:
        ratings = await store.my_ratings(await info.context.user_id(), [self.listing_id])
        return ratings.get(self.listing_id)

    @classmethod
    def from_recommendation(cls, item: RecommendedAgent) -> StoreAgent:
        return cls(
            id=item.version.id,
            graph_id=item.version.graph_id,
            graph_version=item.version.graph_version,
            name=item.version.name,
            description=item.version.description,
            creator=item.version.creator,
            runs=item.listing.runs,
            rating=item.listing.rating,
            listing_id=item.listing.id,
        )
