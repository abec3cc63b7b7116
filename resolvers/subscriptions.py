"""Live execution events (SEMANTICS.md §7), served from the process's EventHub."""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator

import strawberry

from app.context import Info
from app.errors import AppError, ErrorCode, bad_input, not_found
from app.events import Event, StreamPosition, SubscriberTooSlow
from app.models import TERMINAL_STATUSES
from app.services import executions, graphs
from schema.permissions import CanReadExecution
from schema.types.executions import (
    Execution,
    ExecutionEvent,
    ExecutionStatusEvent,
    NodeExecution,
    NodeExecutionEvent,
)
from schema.types.reviews import NodeReview, NodeReviewEvent


def _to_graphql(
    event: Event, hidden: list[str]
) -> ExecutionStatusEvent | NodeExecutionEvent | NodeReviewEvent:
    """`hidden`: what the graph's maker hides from this run's runner (a store agent).
    Built once per event and `hidden` for every subscriber of the process."""
    return event.shape(("execution", *hidden), lambda: _build(event, hidden))


def _build(
    event: Event, hidden: list[str]
) -> ExecutionStatusEvent | NodeExecutionEvent | NodeReviewEvent:
    if event.kind == "execution":
        return ExecutionStatusEvent(
            seq=event.seq, execution=Execution.from_snapshot(event.data["execution"])
        )
    if event.kind == "review":
        return NodeReviewEvent(
            seq=event.seq,
            execution_id=event.data["executionId"],
            review=NodeReview.from_snapshot(event.data["review"]),
        )
    return NodeExecutionEvent(
        seq=event.seq,
        execution_id=event.data["executionId"],
        node_execution=NodeExecution.from_snapshot(event.data["nodeExecution"], hidden),
    )


def _status_event(event: Event) -> ExecutionStatusEvent:
    """A graph stream's status event, built once for every subscriber of the process."""
    return event.shape(
        "graph",
        lambda: ExecutionStatusEvent(
            seq=event.seq, execution=Execution.from_snapshot(event.data["execution"])
        ),
    )


async def _readable_graph_id(user_id: uuid.UUID, graph_id: str) -> uuid.UUID:
    """The graph's id if the caller may read it. Its own frame: the version rows
    read here are not kept for the subscription's life."""
    versions = await graphs.graph_versions(user_id, graph_id)
    if not versions:
        raise not_found("Graph")
    return versions[0].graph_id


def _overflow() -> AppError:
    return AppError(ErrorCode.INTERNAL, "Subscriber fell too far behind; resubscribe with afterSeq")


@strawberry.type
class Subscription:
    @strawberry.subscription(
        permission_classes=[CanReadExecution],
        description=(
            "Everything that happens to one execution, in strictly increasing seq. Without "
            "afterSeq the first event is a snapshot of the execution as it stands, carrying "
            "the current seq, then every later event. With afterSeq (0 to the current seq) "
            "there is no snapshot: every event after that seq, then live ones. The stream "
            "completes right after the event that carries a terminal status."
        ),
    )
    async def execution_events(
        self, info: Info, execution_id: strawberry.ID, after_seq: int | None = None
    ) -> AsyncGenerator[ExecutionEvent, None]:
        user_id = await info.context.user_id()
        row = await executions.get_execution(user_id, execution_id)
        if row is None:
            raise not_found("Execution")
        services = info.context.services
        hidden = await info.context.loaders.maker_secrets.load(
            (row.user_id, row.graph_id, row.graph_version)  # type: ignore[attr-defined]
        )
        # Read before the snapshot: the snapshot is then at least as new as this
        # seq, and the feed below starts exactly after it.
        position = await services.events.position(row.id)
        if after_seq is not None and not 0 <= after_seq <= position.seq:
            raise bad_input(
                f"afterSeq must be between 0 and the current seq ({position.seq})",
                field="afterSeq",
            )
        if position.seq == 0 and row.status in TERMINAL_STATUSES:
            # Its events expired (an hour after the end): nothing more will come.
            position = StreamPosition(seq=0, ended=True)
        if after_seq is None:
            await row.refresh_from_db()
            yield ExecutionStatusEvent(seq=position.seq, execution=Execution.from_model(row))
        feed = services.events.follow(
            services.hub, row.id, position.seq if after_seq is None else after_seq, position
        )
        # Not kept for the subscription's life (a model row for each subscriber).
        del row
        try:
            async for event in feed:
                yield _to_graphql(event, hidden)
        except SubscriberTooSlow:
            raise _overflow() from None
        finally:
            await feed.aclose()

    @strawberry.subscription(
        permission_classes=[CanReadExecution],
        description="Graph-level status changes of every execution of one graph, as they happen.",
    )
    async def graph_execution_events(
        self, info: Info, graph_id: strawberry.ID
    ) -> AsyncGenerator[ExecutionStatusEvent, None]:
        user_id = await info.context.user_id()
        services = info.context.services
        key = services.events.keys.graph_stream(await _readable_graph_id(user_id, graph_id))
        own_runs = str(user_id)  # compared with every event's userId
        async with services.hub.subscribe(key, None) as sub:
            while True:
                try:
                    event = await sub.next()
                except SubscriberTooSlow:
                    raise _overflow() from None
                snapshot = event.data["execution"]
                # A store agent's graph runs for many users: each sees only their own runs.
                if snapshot.get("userId") != own_runs:
                    continue
                yield _status_event(event)
