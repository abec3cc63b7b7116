from __future__ import annotations

import strawberry

from app.services.store import RecommendedAgent


@strawberry.type
class StoreAgent:
    id: strawberry.ID
    graph_id: strawberry.ID
    graph_version: int
    name: str
    description: str
    creator: str
    runs: int
    rating: float

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
        )
