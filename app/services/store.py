"""Store listings: publishing a graph, ratings, runs, and the agents recommended
during onboarding.

A listing's `runs` counts every run of its graph by anyone (its runs before
publishing, then one more for each run started); its `rating` is the mean of its
users' ratings (1 to 5, one per user, changeable; creators do not rate their own).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

from tortoise.functions import Count, Sum
from tortoise.transactions import in_transaction

from app.blocks.registry import get_block
from app.errors import bad_input, not_found
from app.models import (
    Execution,
    Graph,
    Node,
    StoreListing,
    StoreListingVersion,
    StoreReview,
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
            runs = (
                await Execution.filter(graph_id=graph.graph_id, parent_execution_id=None)
                .using_db(conn)
                .count()
            )
            listing = await StoreListing.create(
                owner_id=owner.id, graph_id=graph.graph_id, runs=runs, using_db=conn
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


async def rate_store_agent(
    user_id: uuid.UUID, listing_version_id: str, score: int
) -> RecommendedAgent:
    """Rate (or re-rate) the listing a store agent belongs to."""
    if not 1 <= score <= 5:
        raise bad_input("score must be 1 to 5", field="score")
    parsed = parse_uuid(listing_version_id)
    version = (
        await StoreListingVersion.get_or_none(
            id=parsed, is_approved=True, listing__is_deleted=False
        )
        if parsed
        else None
    )
    if version is None:
        raise not_found("Store agent")
    listing = await StoreListing.get(id=version.listing_id)  # type: ignore[attr-defined]
    if listing.owner_id == user_id:  # type: ignore[attr-defined]
        raise bad_input("Creators cannot rate their own agents")
    async with in_transaction() as conn:
        # The listing row serialises ratings, so the mean never misses one.
        await StoreListing.filter(id=listing.id).select_for_update().using_db(conn).first()
        review = (
            await StoreReview.filter(listing_id=listing.id, user_id=user_id).using_db(conn).first()
        )
        if review is None:
            await StoreReview.create(
                id=uuid.uuid4(), listing_id=listing.id, user_id=user_id, score=score, using_db=conn
            )
        elif review.score != score:
            review.score = score
            await review.save(using_db=conn, update_fields=["score", "updated_at"])
        # Sum and count, not Avg: Tortoise reads Avg of an integer field back as an integer.
        [(total, count)] = (
            await StoreReview.filter(listing_id=listing.id)
            .using_db(conn)
            .annotate(total=Sum("score"), count=Count("id"))
            .values_list("total", "count")
        )
        listing.rating = round(total / count, 2) if count else 0.0
        await StoreListing.filter(id=listing.id).using_db(conn).update(rating=listing.rating)
    return RecommendedAgent(version, listing)


async def my_ratings(user_id: uuid.UUID, listing_ids: list[uuid.UUID]) -> dict[uuid.UUID, int]:
    rows = await StoreReview.filter(user_id=user_id, listing_id__in=listing_ids)
    return {row.listing_id: row.score for row in rows}  # type: ignore[attr-defined]
