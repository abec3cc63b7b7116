"""Human review: the nodes waiting for a person, and their decisions."""

from __future__ import annotations

from typing import Annotated

import strawberry
from strawberry.scalars import JSON

from app.context import Info
from app.services import reviews
from schema.permissions import CanExecuteGraph, CanReadExecution
from schema.types.graphs import PageInfo
from schema.types.reviews import NodeReview, NodeReviewConnection, NodeReviewEdge


@strawberry.type
class ReviewQueries:
    @strawberry.field(
        permission_classes=[CanReadExecution],
        description="The user's node runs waiting for a decision, soonest to expire first.",
    )
    async def pending_reviews(
        self,
        info: Info,
        first: Annotated[int, strawberry.argument(description="1 to 100.")] = 25,
        after: str | None = None,
        graph_id: strawberry.ID | None = None,
    ) -> NodeReviewConnection:
        page = await reviews.list_pending_reviews(
            await info.context.user_id(), graph_id, first, after
        )
        edges = [
            NodeReviewEdge(cursor=page.cursor(r), node=NodeReview.from_model(r))
            for r in page.reviews
        ]
        return NodeReviewConnection(
            edges=edges,
            page_info=PageInfo(
                has_next_page=page.has_next, end_cursor=edges[-1].cursor if edges else None
            ),
            total_count=page.total,
        )


@strawberry.type
class ReviewMutations:
    @strawberry.mutation(
        permission_classes=[CanExecuteGraph],
        description=(
            "Decides a node waiting for review; the run resumes. Approved: the node runs, with "
            "`data` as edited (a sensitive node: input pins to replace; HumanReview: its new "
            "data). Rejected: a sensitive node fails with `message`, HumanReview yields it on "
            "`rejected`. Another user's node is NOT_FOUND; a node decided already is CONFLICT."
        ),
    )
    async def review_node(
        self,
        info: Info,
        node_execution_id: strawberry.ID,
        approve: bool,
        data: JSON | None = None,
        message: str | None = None,
    ) -> NodeReview:
        services = info.context.services
        review = await reviews.review_node(
            reviews.ReviewServices(info.context.settings, services.redis, services.publisher),
            await info.context.user_id(),
            node_execution_id,
            approve,
            data,
            message,
        )
        return NodeReview.from_model(review)
