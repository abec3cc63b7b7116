"""Cron times of schedules: parsing a five-field cron, and the next firing
instant in a time zone, daylight-saving changes included (Vixie cron):

- A cron whose minute and hour fields name fixed values ("30 2 * * *") fires
  once per matching wall-clock time: when the clock skips that time (spring
  forward) it fires at the end of the gap (03:00 for 02:30 in Europe/Berlin);
  when the clock repeats it (fall back) it fires at the first occurrence only.
- A cron with "*" in its minute or hour field ("*/15 * * * *", "0 * * * *")
  follows the clock as it runs: skipped times do not fire, repeated ones fire
  in both passes, so an hourly job keeps firing every real hour.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from croniter import CroniterBadDateError, croniter

from app.errors import bad_input
from app.services.users import is_valid_timezone

MAX_CRON = 200
# A wall-clock time moves at most this far against UTC when a zone changes
# offset (DST is one hour; a few zones have moved two).
_OFFSET_CHANGE_MARGIN = timedelta(hours=3)
# Candidates examined before a cron is declared never to fire again.
_MAX_CANDIDATES = 10_000


def parse_cron(expression: str) -> str:
    """The expression with its whitespace normalised, or BAD_USER_INPUT.
    Five fields only: croniter would read a sixth as seconds."""
    if len(expression) > MAX_CRON:
        raise bad_input(f"cron is longer than {MAX_CRON} characters", field="cron")
    fields = expression.split()
    if len(fields) != 5:
        raise bad_input(
            "cron must have five fields: minute hour day-of-month month day-of-week",
            field="cron",
        )
    normalized = " ".join(fields)
    if not croniter.is_valid(normalized):
        raise bad_input(f"Invalid cron expression {normalized!r}", field="cron")
    return normalized


def follows_the_clock(cron: str) -> bool:
    """Vixie cron's rule: a "*" in the minute or hour field makes a job run by the
    clock as it is, rather than at fixed wall-clock times (see module docstring)."""
    minute, hour, *_ = cron.split()
    return "*" in minute or "*" in hour


def schedule_zone(name: str) -> ZoneInfo:
    # A zone accepted once may leave a later tzdata; such a schedule runs in UTC.
    return ZoneInfo(name) if is_valid_timezone(name) else ZoneInfo("UTC")


def _wall(instant: datetime, zone: ZoneInfo) -> datetime:
    return instant.astimezone(zone).replace(tzinfo=None)


def _gap_end(before: datetime, after: datetime, zone: ZoneInfo) -> datetime:
    """The instant the clock jumped, between two UTC instants with different offsets."""
    target = after.astimezone(zone).utcoffset()
    low, high = int(before.timestamp()), int(after.timestamp())
    while high - low > 1:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, UTC).astimezone(zone).utcoffset() == target:
            high = middle
        else:
            low = middle
    return datetime.fromtimestamp(high, UTC)


def wall_time_instants(wall: datetime, zone: ZoneInfo, by_the_clock: bool) -> list[datetime]:
    """The UTC instants at which a cron fires for one local wall-clock time."""
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    second = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    if first == second:
        return [first]
    exists = _wall(first, zone) == wall
    if exists:  # repeated when the clocks go back
        return sorted({first, second}) if by_the_clock else [min(first, second)]
    # skipped when the clocks go forward
    return [] if by_the_clock else [_gap_end(min(first, second), max(first, second), zone)]


def next_fire_time(cron: str, zone: ZoneInfo, after: datetime) -> datetime | None:
    """The first UTC instant strictly after `after` at which `cron` fires in `zone`;
    None when it never fires again (e.g. "0 0 31 2 *")."""
    after = after.astimezone(UTC)
    by_the_clock = follows_the_clock(cron)
    offset = after.astimezone(zone).utcoffset()
    near_change = any(
        (after + delta).astimezone(zone).utcoffset() != offset
        for delta in (-_OFFSET_CHANGE_MARGIN, _OFFSET_CHANGE_MARGIN)
    )
    # Near an offset change a wall time earlier than now may still lie ahead
    # (the repeated hour), so look from a little before.
    start = _wall(after, zone) - (_OFFSET_CHANGE_MARGIN if near_change else timedelta(0))
    candidates = croniter(cron, start)
    best: datetime | None = None
    for _ in range(_MAX_CANDIDATES):
        try:
            wall = candidates.get_next(datetime)
        except CroniterBadDateError:
            break
        if best is not None and wall > _wall(best, zone) + _OFFSET_CHANGE_MARGIN:
            break  # no later wall time can map to an instant before best
        ahead = [i for i in wall_time_instants(wall, zone, by_the_clock) if i > after]
        if ahead and (best is None or ahead[0] < best):
            best = ahead[0]
            if not near_change:
                break  # away from offset changes, wall time order is instant order
    return best
