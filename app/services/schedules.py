"""Schedules: a graph version run as its owner on a cron in a time zone (SEMANTICS.md §9).

Cron times are wall-clock times in the schedule's zone; `next_run_at` stores the
next one as a UTC instant, and the workers' scheduler fires rows whose instant
has come (workers/jobs/schedules.py); app/services/cron_times.py computes
those instants, daylight-saving changes included.

Firing: each due schedule in its own transaction that locks the row (SKIP
LOCKED, so several workers and tasks share the work), runs executeGraph as the
owner with source SCHEDULE and advances `next_run_at` only if it still holds the
due time it claimed. The execution row and the advance commit together, so a due
time fires exactly once however many workers poll. After downtime a schedule
fires once for everything it missed, then continues from the first cron time
after the firing (no burst of the missed ones).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from arq import ArqRedis
from tortoise.transactions import in_transaction

from app.clock import utcnow
from app.errors import AppError, ErrorCode, bad_input, not_found
from app.events import EventPublisher
from app.models import (
    FiringOutcome,
    GraphSource,
    Node,
    OnboardingStep,
    Schedule,
    ScheduleFiring,
    User,
)
from app.services import executions, onboarding, run_requests
from app.services.after_commit import AfterCommit, DeferredPublisher, DeferredQueue
from app.services.cron_times import next_fire_time, parse_cron, schedule_zone
from app.services.executions import check_run_inputs
from app.services.graph_validation import parse_uuid
from app.services.graphs import validation_error
from app.services.users import is_valid_timezone
from app.settings import Settings

log = logging.getLogger(__name__)

MAX_NAME = 200
# ------------------------------------------------------------------ create, list, delete


@dataclass
class ScheduleSpec:
    graph_id: str
    graph_version: int | None
    name: str
    cron: str
    inputs: Any = None
    credentials: Any = None
    timezone: str | None = None
    preset_id: str | None = None
    max_credits: int | None = None


async def _zone_name(user_id: uuid.UUID, requested: str | None) -> str:
    if requested is not None:
        if not is_valid_timezone(requested):
            raise bad_input(
                f"Unknown time zone {requested!r}: use an IANA name like Europe/Berlin",
                field="timezone",
            )
        return requested
    user = await User.get_or_none(id=user_id).only("id", "timezone")
    return user.timezone if user and is_valid_timezone(user.timezone) else "UTC"


def _object_or_error(value: Any, name: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise bad_input(f"{name} must be an object", field=name)
    return value


@dataclass
class ValidSchedule:
    """A schedule's fields once every check passed (nothing stored yet)."""

    graph_id: uuid.UUID
    graph_version: int
    name: str
    cron: str
    timezone: str
    inputs: dict[str, Any]
    credentials: dict[str, Any]
    preset_id: uuid.UUID | None
    next_run_at: datetime
    max_credits: int | None


def check_max_credits(value: int | None) -> int | None:
    if value is not None and value <= 0:
        raise bad_input("maxCredits must be a positive number of credits", field="maxCredits")
    return value


async def validate_spec(
    settings: Settings, user_id: uuid.UUID, spec: ScheduleSpec
) -> ValidSchedule:
    """Checks everything before storing anything: input shape (BAD_USER_INPUT),
    the graph version (NOT_FOUND), then the inputs against it (GRAPH_VALIDATION_FAILED).
    createSchedule and updateSchedule both go through here."""
    cron = parse_cron(spec.cron)
    name = spec.name.strip()
    if not name or len(name) > MAX_NAME:
        raise bad_input(f"name must be 1 to {MAX_NAME} characters", field="name")
    inputs = _object_or_error(spec.inputs, "inputs")
    credentials = _object_or_error(spec.credentials, "credentials")
    max_credits = check_max_credits(spec.max_credits)
    zone_name = await _zone_name(user_id, spec.timezone)
    next_run_at = next_fire_time(cron, schedule_zone(zone_name), utcnow())
    if next_run_at is None:
        raise bad_input(f"cron {cron!r} never fires", field="cron")

    # The graph (own, or a store agent's), with a preset's inputs under the schedule's.
    request = await run_requests.prepare(
        user_id, spec.graph_id, spec.graph_version, inputs, credentials, spec.preset_id
    )
    graph = request.graph
    if request.preset and spec.graph_version not in (None, request.preset.graph_version):
        # Its firings run the preset's current version (they pass no version), so
        # another version would be checked here but never run.
        raise bad_input(
            "A schedule on a preset runs the preset's graph version: "
            "change the preset's version instead",
            field="graphVersion",
        )
    nodes = await Node.filter(graph_id=graph.id)
    validation = check_run_inputs(settings, nodes, request.inputs)
    await run_requests.check_credentials(settings, user_id, request, nodes, validation)
    if not validation.valid:
        raise validation_error(validation)
    return ValidSchedule(
        graph_id=graph.graph_id,
        # Pinned: a schedule runs the version it was made for, also after newer saves.
        graph_version=graph.version,
        name=name,
        cron=cron,
        timezone=zone_name,
        inputs=inputs,
        credentials=credentials,
        # A preset's own inputs keep applying as it changes; it runs the preset's version.
        preset_id=request.preset.id if request.preset else None,
        next_run_at=next_run_at,
        max_credits=max_credits,
    )


async def create_schedule(settings: Settings, user_id: uuid.UUID, spec: ScheduleSpec) -> Schedule:
    valid = await validate_spec(settings, user_id, spec)
    schedule = await Schedule.create(id=uuid.uuid4(), user_id=user_id, **vars(valid))
    await onboarding.complete_step(settings, user_id, OnboardingStep.SCHEDULE_AGENT)
    return schedule


async def list_schedules(user_id: uuid.UUID, graph_id: str | None) -> list[Schedule]:
    """The user's schedules (of one graph when asked), newest first."""
    query = Schedule.filter(user_id=user_id)
    if graph_id is not None:
        parsed = parse_uuid(graph_id)
        if parsed is None:
            return []
        query = query.filter(graph_id=parsed)
    return await query.order_by("-created_at", "-id")


async def delete_schedule(user_id: uuid.UUID, schedule_id: str) -> uuid.UUID:
    parsed = parse_uuid(schedule_id)
    if parsed is None or not await Schedule.filter(id=parsed, user_id=user_id).delete():
        raise not_found("Schedule")
    return parsed


def next_run_time(schedule: Schedule) -> datetime | None:
    """`next_run_at` in the schedule's own zone, as clients are shown it."""
    if schedule.next_run_at is None or schedule.is_paused:
        return None
    return schedule.next_run_at.astimezone(schedule_zone(schedule.timezone))


# ------------------------------------------------------------------ firing


_SKIPS = {
    ErrorCode.INSUFFICIENT_CREDITS: FiringOutcome.SKIPPED_NO_BALANCE,
    ErrorCode.NOT_FOUND: FiringOutcome.GRAPH_GONE,
}


@dataclass
class Firing:
    schedule_id: uuid.UUID
    user_id: uuid.UUID
    due_at: datetime
    outcome: FiringOutcome = FiringOutcome.FIRED
    execution_id: uuid.UUID | None = None
    next_run_at: datetime | None = None
    detail: str | None = None


class _LostClaim(Exception):
    """Rolls the firing back: the row no longer holds the due time we claimed."""


async def fire_next_due(
    settings: Settings,
    arq: ArqRedis,
    publisher: EventPublisher,
    now: datetime,
    attempted: set[uuid.UUID],
) -> Firing | None:
    """Fires the most overdue schedule not yet in `attempted` (its id is added
    there), or returns None when nothing is due. Unexpected errors roll the
    firing back and propagate; the schedule stays due for the next poll."""
    after_commit = AfterCommit()
    firing: Firing | None = None
    try:
        async with in_transaction() as conn:
            # A paused schedule has no next_run_at; is_paused guards rows paused by hand.
            query = Schedule.filter(next_run_at__lte=now, is_paused=False)
            if attempted:
                query = query.exclude(id__in=list(attempted))
            row = await (
                query.order_by("next_run_at", "id")
                .select_for_update(skip_locked=True)
                .using_db(conn)
                .first()
            )
            if row is None:
                return None
            attempted.add(row.id)
            firing = Firing(row.id, row.user_id, row.next_run_at)  # type: ignore[attr-defined]
            await _run_as_owner(settings, after_commit, arq, publisher, row, firing)
            # Compare-and-set on the due time: the row lock already makes us the
            # only one firing it; this also holds where there are no row locks.
            claimed = Schedule.filter(id=row.id, next_run_at=row.next_run_at).using_db(conn)
            if firing.outcome is FiringOutcome.GRAPH_GONE:
                changed = await claimed.delete()
            else:
                firing.next_run_at = next_fire_time(row.cron, schedule_zone(row.timezone), now)
                changes: dict[str, Any] = {"next_run_at": firing.next_run_at}
                if firing.outcome is FiringOutcome.FIRED:
                    changes["last_run_at"] = utcnow()
                changed = await claimed.update(**changes)
            if not changed:
                raise _LostClaim
            if firing.outcome is not FiringOutcome.GRAPH_GONE:
                await _record(firing, conn)
    except _LostClaim:
        assert firing is not None
        firing.outcome, firing.execution_id = FiringOutcome.ALREADY_FIRED, None
        return firing
    await after_commit.run()
    return firing


async def _record(firing: Firing, conn: Any) -> None:
    """The firing's history row, in the firing's transaction (Schedule.executions)."""
    await ScheduleFiring.create(
        id=uuid.uuid4(),
        schedule_id=firing.schedule_id,
        due_at=firing.due_at,
        fired_at=utcnow(),
        outcome=firing.outcome,
        execution_id=firing.execution_id,
        reason=firing.detail,
        using_db=conn,
    )


async def _run_as_owner(
    settings: Settings,
    after_commit: AfterCommit,
    arq: ArqRedis,
    publisher: EventPublisher,
    row: Schedule,
    firing: Firing,
) -> None:
    """executeGraph as the schedule's owner, inside the firing's transaction."""
    try:
        execution = await executions.execute_graph(
            settings,
            DeferredQueue(after_commit, arq),  # type: ignore[arg-type]
            DeferredPublisher(after_commit, publisher),  # type: ignore[arg-type]
            firing.user_id,
            str(row.graph_id),
            None if row.preset_id else row.graph_version,  # type: ignore[attr-defined]
            row.inputs,
            row.credentials,
            GraphSource.SCHEDULE,
            preset_id=str(row.preset_id) if row.preset_id else None,  # type: ignore[attr-defined]
            max_credits=row.max_credits,
        )
    except AppError as exc:
        firing.outcome = _SKIPS.get(exc.code, FiringOutcome.SKIPPED_INVALID)
        firing.detail = exc.message
        return
    firing.execution_id = execution.id
