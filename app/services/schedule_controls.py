"""Steering schedules: pause, resume, update, the times ahead and the firing history.

- Pausing clears the due time (`next_run_at`) under the row lock the scheduler's
  claim takes (app/services/schedules.py), so a paused schedule is never claimed
  by any worker; a firing already under way finishes first, then the pause holds.
- Resuming sets the due time to the first cron time after now: what was missed
  while paused is not fired, not even once.
- updateSchedule merges the changes into the row under its lock, checks the
  result exactly like createSchedule and writes nothing unless every check
  passes; a new cron or time zone moves the due time to the first new cron time
  after now (a paused schedule stays paused).
- A firing is kept for each due time that came (fired, or skipped with the
  reason); a paused schedule has no due times, so pausing leaves none.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tortoise import connections
from tortoise.transactions import in_transaction

from app.clock import utcnow
from app.errors import bad_input, not_found
from app.models import Schedule, ScheduleFiring
from app.services.cron_times import next_fire_time, schedule_zone
from app.services.graph_validation import parse_uuid
from app.services.pagination import check_page_size, encode_cursor, rows_after
from app.services.schedules import ScheduleSpec, validate_spec
from app.settings import Settings

MAX_UPCOMING = 50
MAX_FIRINGS_PAGE = 100
# A field of ScheduleChanges left as it is.
KEEP = object()


async def get_schedule(user_id: uuid.UUID, schedule_id: str) -> Schedule:
    parsed = parse_uuid(schedule_id)
    row = await Schedule.get_or_none(id=parsed, user_id=user_id) if parsed else None
    if row is None:
        raise not_found("Schedule")
    return row


async def _locked(user_id: uuid.UUID, schedule_id: str, conn: Any) -> Schedule:
    parsed = parse_uuid(schedule_id)
    row = None
    if parsed is not None:
        row = (
            await Schedule.filter(id=parsed, user_id=user_id)
            .select_for_update()
            .using_db(conn)
            .first()
        )
    if row is None:
        raise not_found("Schedule")
    return row


async def pause_schedule(user_id: uuid.UUID, schedule_id: str) -> Schedule:
    async with in_transaction() as conn:
        row = await _locked(user_id, schedule_id, conn)
        if not row.is_paused:
            row.is_paused, row.next_run_at = True, None
            await row.save(update_fields=["is_paused", "next_run_at"], using_db=conn)
    return row


async def resume_schedule(user_id: uuid.UUID, schedule_id: str) -> Schedule:
    async with in_transaction() as conn:
        row = await _locked(user_id, schedule_id, conn)
        if row.is_paused:
            row.is_paused = False
            row.next_run_at = next_fire_time(row.cron, schedule_zone(row.timezone), utcnow())
            await row.save(update_fields=["is_paused", "next_run_at"], using_db=conn)
    return row


@dataclass
class ScheduleChanges:
    """Left as KEEP, a field keeps its value."""

    name: Any = KEEP
    cron: Any = KEEP
    timezone: Any = KEEP
    inputs: Any = KEEP
    graph_version: Any = KEEP
    max_credits: Any = KEEP  # None clears the budget


def _merged(row: Schedule, changes: ScheduleChanges) -> ScheduleSpec:
    def pick(name: str, current: Any) -> Any:
        value = getattr(changes, name)
        return current if value is KEEP else value

    preset_id = row.preset_id  # type: ignore[attr-defined]
    # A preset's schedule runs the preset's version unless a version is given.
    version = None if preset_id else row.graph_version
    return ScheduleSpec(
        graph_id=str(row.graph_id),
        graph_version=pick("graph_version", version),
        name=pick("name", row.name),
        cron=pick("cron", row.cron),
        inputs=pick("inputs", row.inputs),
        credentials=row.credentials,
        timezone=pick("timezone", row.timezone),
        preset_id=str(preset_id) if preset_id else None,
        max_credits=pick("max_credits", row.max_credits),
    )


async def update_schedule(
    settings: Settings, user_id: uuid.UUID, schedule_id: str, changes: ScheduleChanges
) -> Schedule:
    async with in_transaction() as conn:
        # Merged from the row as locked: two updates changing different fields at
        # once both land (merging from an earlier read let the second write the
        # first one's field back to its old value).
        row = await _locked(user_id, schedule_id, conn)
        valid = await validate_spec(settings, user_id, _merged(row, changes))
        timing_changed = (valid.cron, valid.timezone) != (row.cron, row.timezone)
        fields = vars(valid)
        next_run_at = fields.pop("next_run_at")
        for name, value in fields.items():
            setattr(row, name, value)
        if timing_changed and not row.is_paused:
            row.next_run_at = next_run_at
        await row.save(using_db=conn)
    return row


def upcoming_run_times(row: Schedule, count: int) -> list[datetime]:
    """The next `count` due times in the schedule's zone; none while paused."""
    if not 1 <= count <= MAX_UPCOMING:
        raise bad_input(f"count must be between 1 and {MAX_UPCOMING}", field="count")
    zone = schedule_zone(row.timezone)
    times: list[datetime] = []
    due = None if row.is_paused else row.next_run_at
    now = utcnow()
    while due is not None and len(times) < count:
        times.append(due.astimezone(zone))
        # An overdue time fires once, then the cron goes on from the firing
        # (fire_next_due): the times it missed meanwhile are not ahead.
        due = next_fire_time(row.cron, zone, max(due, now))
    return times


@dataclass
class FiringPage:
    firings: list[ScheduleFiring]
    total: int
    has_next: bool

    @staticmethod
    def cursor(firing: ScheduleFiring) -> str:
        return encode_cursor(firing.due_at, firing.id)


async def list_firings(schedule_id: uuid.UUID, first: int, after: str | None) -> FiringPage:
    """A schedule's firings, the latest due time first."""
    check_page_size(first, MAX_FIRINGS_PAGE)
    base = ScheduleFiring.filter(schedule_id=schedule_id)
    query = base
    if after:
        query = query.filter(rows_after(after, time_field="due_at"))
    rows = await query.order_by("-due_at", "-id").limit(first + 1)
    return FiringPage(rows[:first], await base.count(), len(rows) > first)


_PG_FIRST_PAGES = """
SELECT id, schedule_id, due_at, fired_at, outcome, execution_id, reason, total FROM (
  SELECT f.*, row_number() OVER (PARTITION BY schedule_id ORDER BY due_at DESC, id DESC) AS rank,
    count(*) OVER (PARTITION BY schedule_id) AS total
  FROM schedule_firings f WHERE schedule_id = ANY($1::uuid[])
) ranked WHERE rank <= $2 ORDER BY schedule_id, due_at DESC, id DESC
"""


async def first_pages(schedule_ids: list[uuid.UUID], first: int) -> list[FiringPage]:
    """The first page of each schedule's firings (a list of schedules asking for
    their history): one statement on PostgreSQL, one per schedule elsewhere."""
    check_page_size(first, MAX_FIRINGS_PAGE)
    client = connections.get("default")
    if client.capabilities.dialect != "postgres":
        return [await list_firings(schedule_id, first, None) for schedule_id in schedule_ids]
    async with client.acquire_connection() as conn:
        rows = await conn.fetch(_PG_FIRST_PAGES, list(set(schedule_ids)), first + 1)
    grouped: dict[uuid.UUID, list[ScheduleFiring]] = defaultdict(list)
    totals: dict[uuid.UUID, int] = {}
    for row in rows:
        data = dict(row)
        totals[data["schedule_id"]] = data.pop("total")
        grouped[data["schedule_id"]].append(ScheduleFiring(**data))
    return [
        FiringPage(
            grouped[schedule_id][:first],
            totals.get(schedule_id, 0),
            len(grouped[schedule_id]) > first,
        )
        for schedule_id in schedule_ids
    ]
