"""Store listings: publishing a graph, and the agents recommended during onboarding."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

from tortoise.transactions import in_transaction

from app.blocks.registry import get_block
from app.errors import not_found
from app.models import (
    Graph,
    Node,
    StoreListing,
    StoreListingVersion,
    User,
    UserOnboarding,
)
from app.services.graph_validation import parse_uuid

MAX_RECOMMENDED = 20


async def publish_graph(
    graph_id: str, integrations: list[str] | None = None
) -> StoreListingVersion:
    """Publish the graph's active version as the next version of its listing.
    Categories come from its blocks; `integrations` (what onboarding asks about)
    default to the lower-cased categories."""
    parsed = parse_uuid(graph_id)
    graph = await Graph.get_or_none(graph_id=parsed, is_active=True) if parsed else None
    if graph is None:
        raise not_found("Graph")
    owner = await User.get(id=graph.user_id)  # type: ignore[attr-defined]
    nodes = await Node.filter(graph_id=graph.id)
    categories = sorted(
        {str(c) for n in nodes if (b := get_block(n.block_id)) for c in b.categories}
    )
    async with in_transaction() as conn:
        listing = await StoreListing.filter(graph_id=graph.graph_id).using_db(conn).first()
        if listing is None:
            listing = await StoreListing.create(
                owner_id=owner.id, graph_id=graph.graph_id, using_db=conn
            )
        count = await StoreListingVersion.filter(listing_id=listing.id).using_db(conn).count()
        return await StoreListingVersion.create(
            listing_id=listing.id,
            version=count + 1,
            graph_id=graph.graph_id,
            graph_version=graph.version,
            name=graph.name,
            description=graph.description,
            creator=owner.name or owner.email.split("@")[0] or "unknown",
            categories=categories,
            integrations=sorted(
                {i.lower() for i in integrations or [c.lower() for c in categories]}
            ),
            using_db=conn,
        )


@dataclass
class RecommendedAgent:
    version: StoreListingVersion
    listing: StoreListing


def _words(text: str | None) -> set[str]:
    return {w for w in re.findall(r"[a-z0-9]+", (text or "").lower()) if len(w) > 2}


async def recommended_agents(user_id: uuid.UUID) -> list[RecommendedAgent]:
    """Published listings (latest version each): those matching the user's onboarding
    integrations or usage reason first, then by runs and rating."""
    onboarding = await UserOnboarding.get_or_none(user_id=user_id)
    wanted = {i.lower() for i in (onboarding.integrations if onboarding else [])}
    reason = _words(onboarding.usage_reason if onboarding else None)
    listings = {listing.id: listing for listing in await StoreListing.filter(is_deleted=False)}
    latest: dict[uuid.UUID, StoreListingVersion] = {}
    for version in await StoreListingVersion.filter(
        listing_id__in=list(listings), is_approved=True
    ).order_by("version"):
        latest[version.listing_id] = version  # type: ignore[attr-defined]

    def rank(item: RecommendedAgent) -> tuple:
        v = item.version
        text = _words(" ".join([v.name, v.description, *v.categories]))
        matches = bool(wanted & set(v.integrations)) or bool(reason & text)
        return (not matches, -item.listing.runs, -item.listing.rating, v.name)

    items = [RecommendedAgent(v, listings[lid]) for lid, v in latest.items()]
    return sorted(items, key=rank)[:MAX_RECOMMENDED]
