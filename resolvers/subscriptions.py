"""Live execution events (SEMANTICS.md §7), served from the process's EventHub."""

from __future__ import annotations

from collections.abc import AsyncGenerator

import strawberry

from app.context import Info
from app.errors import AppError, ErrorCode, not_found
from app.events import Event
from app.models import TERMINAL_STATUSES, ExecutionStatus
from app.services import executions, graphs
from schema.permissions import CanReadExecution
from schema.types.executions import (
    Execution,
    ExecutionEvent,
    ExecutionStatusEvent,
    NodeExecution,
    NodeExecutionEvent,
)


def _to_graphql(event: Event) -> ExecutionStatusEvent | NodeExecutionEvent:
    if event.kind == "execution":
        return ExecutionStatusEvent(
            seq=event.seq, execution=Execution.from_snapshot(event.data["execution"])
        )
    return NodeExecutionEvent(
        seq=event.seq,
        execution_id=event.data["executionId"],
        node_execution=NodeExecution.from_snapshot(event.data["nodeExecution"]),
    )


def _ends(event: Event, execution_id: str) -> bool:
    """The terminal status event of this execution ends its stream."""
    if event.kind != "execution":
        return False
    snapshot = event.data["execution"]
    return snapshot["id"] == execution_id and ExecutionStatus(snapshot["status"]) in (
        TERMINAL_STATUSES
    )


def _overflow() -> AppError:
    return AppError(ErrorCode.INTERNAL, "Subscriber fell too far behind; resubscribe with afterSeq")


@strawberry.type
class Subscription:
    @strawberry.subscription(
        permission_classes=[CanReadExecution],
        description=(
            "Everything that happens to one execution. The first event is a snapshot of "
            "the execution as it stands; the stream completes after the event that carries "
            "a terminal status. afterSeq resumes after the last event a client saw."
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
        key = services.events.keys.stream(row.id)
        seq_now = await services.events.current_seq(row.id)
        # Listen from seq_now before reading the snapshot: nothing published in
        # between is missed, and nothing at or before seq_now arrives twice.
        async with services.hub.subscribe(key, f"{seq_now}-1" if seq_now else "0-0") as sub:
            await row.refresh_from_db()
            yield ExecutionStatusEvent(seq=seq_now, execution=Execution.from_model(row))
            if after_seq is not None and after_seq < seq_now:
                for event in await services.events.after(row.id, after_seq, upto=seq_now):
                    yield _to_graphql(event)
                    if _ends(event, str(row.id)):
                        return
            if row.status in TERMINAL_STATUSES:
                return
            while True:
                if sub.overflowed and sub.queue.empty():
                    raise _overflow()
                _, event = await sub.queue.get()
                yield _to_graphql(event)
                if _ends(event, str(row.id)):
                    return

    @strawberry.subscription(
        permission_classes=[CanReadExecution],
        description="Graph-level status changes of every execution of one graph, as they happen.",
    )
    async def graph_execution_events(
        self, info: Info, graph_id: strawberry.ID
    ) -> AsyncGenerator[ExecutionStatusEvent, None]:
        user_id = await info.context.user_id()
        versions = await graphs.graph_versions(user_id, graph_id)
        if not versions:
            raise not_found("Graph")
        services = info.context.services
        key = services.events.keys.graph_stream(versions[0].graph_id)
        async with services.hub.subscribe(key, None) as sub:
            while True:
                if sub.overflowed and sub.queue.empty():
                    raise _overflow()
                _, event = await sub.queue.get()
                snapshot = event.data["execution"]
                # A store agent's graph runs for many users: each sees only their own runs.
                if snapshot.get("userId") != str(user_id):
                    continue
                yield ExecutionStatusEvent(
                    seq=event.seq, execution=Execution.from_snapshot(snapshot)
                )
