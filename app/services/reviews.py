"""Human review of node runs (issue 15): what waits for a person, and their decisions.

The engine (workers/engine/reviews.py) stores a PENDING review when a node must
wait, and the run gives its worker back (status REVIEW). A decision here is one
transaction on the review row (locked, so a node is decided once); after it
commits, the review's event goes on the run's stream and a job resumes the run.
A run whose decision was stored but whose job never reached the queue is
enqueued again by the workers' sweep (`requeue_decided_runs`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from arq import ArqRedis
from tortoise.expressions import Q, Subquery

from app.blocks.base import InvalidBlockInput
from app.blocks.registry import get_block
from app.clock import utcnow
from app.errors import AppError, ErrorCode, bad_input, not_found
from app.events import EventPublisher
from app.models import (
    Execution,
    ExecutionStatus,
    NodeReview,
    NodeReviewKind,
    NodeReviewStatus,
)
from app.services.executions import enqueue_resume
from app.services.graph_validation import parse_uuid
from app.services.pagination import check_page_size, encode_cursor, rows_after
from app.settings import Settings
from app.transactions import atomic

MAX_REVIEWS_PAGE = 100
MAX_REVIEW_MESSAGE = 2000
# A decided run still waiting this long after its decision lost its job: enqueue again.
DECIDED_STRANDED_AFTER = timedelta(minutes=1)


@dataclass
class ReviewServices:
    """What deciding a review needs: settings, the job queue and the event streams."""

    settings: Settings
    arq: ArqRedis
    publisher: EventPublisher


def review_snapshot(review: NodeReview) -> dict[str, Any]:
    """What a review event carries, JSON-ready (schema/types/reviews.py reads it)."""

    def iso(value: datetime | None) -> str | None:
        return value.isoformat() if value else None

    return {
        "id": str(review.id),
        "userId": str(review.user_id),  # type: ignore[attr-defined]
        "executionId": str(review.execution_id),  # type: ignore[attr-defined]
        "rootExecutionId": str(review.root_execution_id),
        "graphId": str(review.graph_id),
        "graphVersion": review.graph_version,
        "nodeId": str(review.node_id),
        "blockId": str(review.block_id),
        "kind": str(review.kind),
        "status": str(review.status),
        "data": review.shown,
        "message": review.message,
        "reviewedData": review.edited,
        "reviewMessage": review.review_message,
        "createdAt": iso(review.created_at),
        "expiresAt": iso(review.expires_at),
        "decidedAt": iso(review.decided_at),
    }


def review_event(review: NodeReview) -> dict[str, Any]:
    return {
        "kind": "review",
        "executionId": str(review.execution_id),  # type: ignore[attr-defined]
        "review": review_snapshot(review),
    }


async def publish_review(publisher: EventPublisher, review: NodeReview) -> None:
    """The review's event on its execution's stream and every ancestor's (a review in
    a sub-graph run shows on the run the user started, as its node events do)."""
    execution_id: uuid.UUID | None = review.execution_id  # type: ignore[attr-defined]
    body = review_event(review)
    while execution_id is not None:
        await publisher.publish(execution_id, body)
        execution_id = (
            await Execution.filter(id=execution_id)
            .first()
            .values_list("parent_execution_id", flat=True)
        )


def _edited_data(review: NodeReview, data: Any) -> Any:
    """The data a node runs with once approved; BAD_USER_INPUT when it cannot."""
    if data is None:
        return None
    if review.kind == NodeReviewKind.BLOCK:
        return data
    # A sensitive node: the edited input pins replace the ones shown, then the
    # whole input must still be valid for the block.
    if not isinstance(data, dict):
        raise bad_input("data must be an object of input pin name to value", field="data")
    merged = {**(review.shown or {}), **data}
    block = get_block(review.block_id)
    if block is not None:
        try:
            block.validate_input(merged)
        except InvalidBlockInput as exc:
            raise bad_input(f"Invalid input: {exc}", field="data", pinErrors=exc.errors) from None
    return merged


async def review_node(
    services: ReviewServices,
    user_id: uuid.UUID,
    node_execution_id: str,
    approve: bool,
    data: Any = None,
    message: str | None = None,
) -> NodeReview:
    """A person's decision on a waiting node. Another user's node is NOT_FOUND; a
    node decided already is CONFLICT; bad data is BAD_USER_INPUT; none change anything."""
    parsed = parse_uuid(node_execution_id)
    if parsed is None:
        raise not_found("Node review")
    if message is not None and len(message) > MAX_REVIEW_MESSAGE:
        raise bad_input(f"message is longer than {MAX_REVIEW_MESSAGE} characters", field="message")
    if not approve and data is not None:
        raise bad_input("data goes with an approval only", field="data")

    async def work(conn: Any) -> NodeReview:
        review = (
            await NodeReview.filter(id=parsed, user_id=user_id)
            .using_db(conn)
            .select_for_update()
            .first()
        )
        hidden = (
            review is None
            or not await Execution.filter(id=review.root_execution_id, is_deleted=False)
            .using_db(conn)
            .exists()
        )
        if review is None or hidden:
            raise not_found("Node review")
        if review.status != NodeReviewStatus.PENDING:
            raise AppError(ErrorCode.CONFLICT, f"This node was already reviewed ({review.status})")
        edited = _edited_data(review, data) if approve else None
        review.reviewed_data = None if edited is None else NodeReview.box(edited)
        review.status = NodeReviewStatus.APPROVED if approve else NodeReviewStatus.REJECTED
        review.review_message = message
        review.decided_at = utcnow()
        await review.save(using_db=conn)
        return review

    review = await atomic(work)
    await _after_decision(services, review)
    return review


async def _after_decision(services: ReviewServices, review: NodeReview) -> None:
    await publish_review(services.publisher, review)
    await enqueue_resume(
        services.settings, services.arq, review.root_execution_id, f"review:{review.id}"
    )


async def expire_reviews(services: ReviewServices, now: datetime, limit: int = 500) -> int:
    """PENDING reviews past their expiry end EXPIRED (a rejection); returns how many."""
    hours = services.settings.REVIEW_TIMEOUT_HOURS
    due = (
        await NodeReview.filter(status=NodeReviewStatus.PENDING, expires_at__lte=now)
        .order_by("expires_at")
        .limit(limit)
        .values_list("id", flat=True)
    )
    expired = 0
    for review_id in due:

        async def work(conn: Any, review_id: uuid.UUID = review_id) -> NodeReview | None:
            review = (
                await NodeReview.filter(id=review_id, status=NodeReviewStatus.PENDING)
                .using_db(conn)
                .select_for_update()
                .first()
            )
            if review is None:
                return None  # decided meanwhile
            review.status = NodeReviewStatus.EXPIRED
            review.review_message = f"Not reviewed within {hours:g} hours"
            review.decided_at = now
            await review.save(using_db=conn)
            return review

        review = await atomic(work)
        if review is not None:
            expired += 1
            await _after_decision(services, review)
    return expired


async def requeue_decided_runs(
    settings: Settings, arq: ArqRedis, now: datetime, limit: int = 100
) -> int:
    """Runs in REVIEW with no review left PENDING (their resume job was lost between
    the decision's commit and the enqueue): enqueue them again. One query, however
    many runs wait."""
    open_or_fresh = NodeReview.filter(
        Q(status=NodeReviewStatus.PENDING) | Q(decided_at__gt=now - DECIDED_STRANDED_AFTER)
    ).values("root_execution_id")
    stranded = (
        await Execution.filter(status=ExecutionStatus.REVIEW, parent_execution_id=None)
        .exclude(id__in=Subquery(open_or_fresh))
        .limit(limit)
        .values_list("id", flat=True)
    )
    minute = now.strftime("%Y%m%d%H%M")
    return sum(
        [
            await enqueue_resume(settings, arq, execution_id, f"sweep:{minute}")
            for execution_id in stranded
        ]
    )


async def cancel_pending(execution_ids: list[uuid.UUID], now: datetime) -> list[NodeReview]:
    """These executions ended while some of their nodes waited: their reviews are
    CANCELLED, by execution (a run may wait on more nodes than a statement takes
    arguments), under row locks so a decision landing meanwhile is not undone."""

    async def work(conn) -> list[NodeReview]:
        pending = NodeReview.filter(
            execution_id__in=execution_ids, status=NodeReviewStatus.PENDING
        ).using_db(conn)
        found = await pending.select_for_update()
        if found:
            await pending.update(status=NodeReviewStatus.CANCELLED, decided_at=now)
        for review in found:
            review.status, review.decided_at = NodeReviewStatus.CANCELLED, now
        return found

    return await atomic(work)


@dataclass
class ReviewPage:
    reviews: list[NodeReview]
    total: int
    has_next: bool

    @staticmethod
    def cursor(review: NodeReview) -> str:
        return encode_cursor(review.created_at, review.id)


def _pending(user_id: uuid.UUID) -> Any:
    return NodeReview.filter(
        user_id=user_id,
        status=NodeReviewStatus.PENDING,
        root_execution_id__in=Subquery(
            Execution.filter(user_id=user_id, is_deleted=False).values("id")
        ),
    )


async def list_pending_reviews(
    user_id: uuid.UUID, graph_id: str | None, first: int, after: str | None
) -> ReviewPage:
    """The user's nodes waiting for a decision, oldest first (they expire first)."""
    check_page_size(first, MAX_REVIEWS_PAGE)
    base = _pending(user_id)
    if graph_id is not None:
        parsed = parse_uuid(graph_id)
        if parsed is None:
            return ReviewPage([], 0, False)
        base = base.filter(graph_id=parsed)
    query = base
    if after:
        query = query.filter(rows_after(after, ascending=True))
    rows = await query.order_by("created_at", "id").limit(first + 1)
    return ReviewPage(rows[:first], await base.count(), len(rows) > first)


async def pending_reviews_of(execution_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[NodeReview]]:
    """Each execution's PENDING reviews (its sub-graph runs' included), oldest first."""
    rows = await NodeReview.filter(
        Q(root_execution_id__in=execution_ids) | Q(execution_id__in=execution_ids),
        status=NodeReviewStatus.PENDING,
    ).order_by("created_at", "id")
    grouped: dict[uuid.UUID, list[NodeReview]] = {eid: [] for eid in execution_ids}
    for row in rows:
        for key in {row.root_execution_id, row.execution_id}:  # type: ignore[attr-defined]
            if key in grouped:
                grouped[key].append(row)
    return grouped
