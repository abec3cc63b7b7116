"""When a cron fires in a time zone, with fixed clocks (SEMANTICS.md §9).

Vixie cron's rules, as app/services/schedules.py states them: fixed-time crons
fire once per wall-clock time (a skipped time at the end of the gap, a repeated
one at its first occurrence); crons with "*" in minute or hour follow the clock.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from app.errors import AppError, ErrorCode
from app.services.cron_times import next_fire_time, parse_cron

BERLIN = ZoneInfo("Europe/Berlin")
# 2025-03-30: 02:00 CET becomes 03:00 CEST (01:00 UTC).
SPRING_FORWARD_EVE = datetime(2025, 3, 29, 12, 0, tzinfo=UTC)
# 2025-10-26: 03:00 CEST becomes 02:00 CET (01:00 UTC); 02:00-02:59 happens twice.
FALL_BACK_EVE = datetime(2025, 10, 25, 12, 0, tzinfo=UTC)


def firings(cron: str, zone: ZoneInfo, start: datetime, until: datetime) -> list[datetime]:
    """Every UTC instant the cron fires in (start, until], as the scheduler would
    compute them one after another."""
    found = []
    current = start
    while (current := next_fire_time(cron, zone, current)) is not None and current <= until:
        found.append(current)
    return found


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def local(instant: datetime, zone: ZoneInfo = BERLIN) -> str:
    return instant.astimezone(zone).isoformat()


def test_daily_time_in_the_spring_gap_fires_once_when_the_gap_ends():
    times = firings("30 2 * * *", BERLIN, SPRING_FORWARD_EVE, utc(2025, 3, 31, 12))
    assert [local(t) for t in times] == [
        "2025-03-30T03:00:00+02:00",  # 02:30 does not exist that night
        "2025-03-31T02:30:00+02:00",
    ]


def test_daily_time_in_the_repeated_hour_fires_once_at_its_first_occurrence():
    times = firings("30 2 * * *", BERLIN, FALL_BACK_EVE, utc(2025, 10, 27, 12))
    assert times == [utc(2025, 10, 26, 0, 30), utc(2025, 10, 27, 1, 30)]
    assert [local(t) for t in times] == [
        "2025-10-26T02:30:00+02:00",
        "2025-10-27T02:30:00+01:00",
    ]


def test_the_second_pass_of_the_repeated_hour_does_not_fire_a_fixed_time_again():
    # The scheduler asks again from inside the second 02:00-03:00 (02:10 CET).
    second_pass = utc(2025, 10, 26, 1, 10)
    assert next_fire_time("30 2 * * *", BERLIN, second_pass) == utc(2025, 10, 27, 1, 30)


def test_hourly_cron_fires_every_real_hour_across_both_changes():
    spring = firings("0 * * * *", BERLIN, utc(2025, 3, 29, 23, 30), utc(2025, 3, 30, 2, 30))
    assert [local(t) for t in spring] == [
        "2025-03-30T01:00:00+01:00",
        "2025-03-30T03:00:00+02:00",  # the clock skipped 02:00
        "2025-03-30T04:00:00+02:00",
    ]
    autumn = firings("0 * * * *", BERLIN, utc(2025, 10, 25, 22, 30), utc(2025, 10, 26, 2, 30))
    assert autumn == [
        utc(2025, 10, 25, 23),
        utc(2025, 10, 26, 0),
        utc(2025, 10, 26, 1),
        utc(2025, 10, 26, 2),
    ]
    assert [local(t) for t in autumn] == [
        "2025-10-26T01:00:00+02:00",
        "2025-10-26T02:00:00+02:00",
        "2025-10-26T02:00:00+01:00",  # 02:00 again, an hour later
        "2025-10-26T03:00:00+01:00",
    ]


def test_clock_following_cron_skips_the_missing_times_without_a_burst():
    times = firings("*/20 * * * *", BERLIN, utc(2025, 3, 30, 0, 30), utc(2025, 3, 30, 1, 30))
    assert [local(t) for t in times] == [
        "2025-03-30T01:40:00+01:00",
        "2025-03-30T03:00:00+02:00",
        "2025-03-30T03:20:00+02:00",
    ]


def test_clock_following_cron_fires_in_both_passes_of_the_repeated_hour():
    times = firings("*/30 * * * *", BERLIN, utc(2025, 10, 26, 0, 10), utc(2025, 10, 26, 2, 10))
    assert times == [
        utc(2025, 10, 26, 0, 30),
        utc(2025, 10, 26, 1, 0),
        utc(2025, 10, 26, 1, 30),
        utc(2025, 10, 26, 2, 0),
    ]


def test_half_hour_daylight_saving_moves_a_fixed_time_to_the_end_of_the_gap():
    lord_howe = ZoneInfo("Australia/Lord_Howe")  # 02:00 becomes 02:30 on 2025-10-05
    times = firings("15 2 * * *", lord_howe, utc(2025, 10, 3, 12), utc(2025, 10, 6, 12))
    assert [local(t, lord_howe) for t in times] == [
        "2025-10-04T02:15:00+10:30",
        "2025-10-05T02:30:00+11:00",
        "2025-10-06T02:15:00+11:00",
    ]


def test_southern_hemisphere_fall_back_fires_a_fixed_time_once():
    sydney = ZoneInfo("Australia/Sydney")  # 03:00 AEDT becomes 02:00 AEST on 2025-04-06
    times = firings("30 2 * * *", sydney, utc(2025, 4, 4, 0), utc(2025, 4, 7, 0))
    assert [local(t, sydney) for t in times] == [
        "2025-04-05T02:30:00+11:00",
        "2025-04-06T02:30:00+11:00",  # the first of the two 02:30s that night
        "2025-04-07T02:30:00+10:00",
    ]


def test_wall_time_is_kept_across_a_change_weeks_away():
    new_york = ZoneInfo("America/New_York")
    winter = next_fire_time("0 9 * * 1", new_york, utc(2025, 3, 1))
    summer = next_fire_time("0 9 * * 1", new_york, utc(2025, 3, 12))
    assert local(winter, new_york) == "2025-03-03T09:00:00-05:00"
    assert local(summer, new_york) == "2025-03-17T09:00:00-04:00"


def test_next_time_is_strictly_after_the_given_instant():
    assert next_fire_time("* * * * *", ZoneInfo("UTC"), utc(2025, 1, 1, 0, 0)) == utc(
        2025, 1, 1, 0, 1
    )
    assert next_fire_time("0 0 1 1 *", ZoneInfo("UTC"), utc(2025, 1, 1)) == utc(2026, 1, 1)


def test_a_cron_that_never_matches_has_no_next_time():
    assert next_fire_time("0 0 31 2 *", BERLIN, utc(2025, 1, 1)) is None


def test_leap_day_cron_finds_the_next_leap_year():
    assert next_fire_time("0 12 29 2 *", ZoneInfo("UTC"), utc(2025, 1, 1)) == utc(2028, 2, 29, 12)


@pytest.mark.parametrize(
    "expression",
    [
        "every day",
        "0 9 * * 1 2025",  # six fields
        "0 0 9 * * 1",  # six fields (seconds first)
        "@daily",
        "61 * * * *",
        "* * 32 * *",
        "*/0 * * * *",
        "",
        "* * * *",
    ],
)
def test_only_five_field_crons_parse(expression):
    with pytest.raises(AppError) as raised:
        parse_cron(expression)
    assert raised.value.code is ErrorCode.BAD_USER_INPUT


def test_cron_whitespace_is_normalised():
    assert parse_cron("  */15   9-17 * *  1-5 ") == "*/15 9-17 * * 1-5"
