"""Steering schedules: pause, resume, update, upcomingRunTimes, firing history.

Like tests/test_schedules.py, firing tests make a schedule due by moving its
stored due time to now (what the clock does when a cron time comes); a due time
far ahead (2027) makes upcomingRunTimes start where a test needs it.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest

from app.clock import utcnow
from app.models import CreditTransactionType, Execution, Schedule, ScheduleFiring
from app.services import ledger
from app.services.cron_times import next_fire_time
from app.services.schedule_controls import upcoming_run_times
from tests.conftest import TEST_ENV
from tests.graph_builders import create_graph, echo_graph
from tests.harness import WorkerProcess
from tests.test_api_keys import create_key
from tests.test_graphs import hostile_time_cursors
from tests.test_presets import create_preset
from tests.test_schedules import YEARLY, create_schedule, make_due, wait_until, when

FIELDS = """id name graphId graphVersion cron timezone inputs nextRunTime isPaused maxCredits
  upcomingRunTimes(count: 3)"""
GET = f"query {{ schedules {{ {FIELDS} }} }}"
PAUSE = f"mutation($id: ID!) {{ pauseSchedule(id: $id) {{ {FIELDS} }} }}"
RESUME = f"mutation($id: ID!) {{ resumeSchedule(id: $id) {{ {FIELDS} }} }}"
UPDATE = f"""mutation($id: ID!, $input: ScheduleUpdateInput!) {{
  updateSchedule(id: $id, input: $input) {{ {FIELDS} }} }}"""
UPCOMING = "query($n: Int!) { schedules { id upcomingRunTimes(count: $n) } }"
HISTORY = """query($first: Int! = 25, $after: String) { schedules { id
  executions(first: $first, after: $after) { totalCount pageInfo { hasNextPage endCursor }
    edges { cursor node { id dueAt firedAt outcome executionId reason } } } } }"""
BERLIN = ZoneInfo("Europe/Berlin")


async def shown(gql, user, schedule_id: str) -> dict:
    rows = (await gql.ok(GET, token=user.token))["schedules"]
    return next(row for row in rows if row["id"] == schedule_id)


async def history(gql, user, schedule_id: str, **variables) -> dict:
    rows = (await gql.ok(HISTORY, variables, token=user.token))["schedules"]
    return next(row for row in rows if row["id"] == schedule_id)["executions"]


async def firing_count(schedule_id: str) -> int:
    return await ScheduleFiring.filter(schedule_id=schedule_id).count()


# ------------------------------------------------------------------ pause and resume


async def test_pause_and_resume_from_the_next_cron_time_after_now(gql, user):
    graph = await create_graph(gql, user)
    schedule = await create_schedule(gql, user, graph["id"], cron="0 * * * *")
    paused = (await gql.ok(PAUSE, {"id": schedule["id"]}, token=user.token))["pauseSchedule"]
    assert paused["isPaused"] is True
    assert paused["nextRunTime"] is None and paused["upcomingRunTimes"] == []
    again = (await gql.ok(PAUSE, {"id": schedule["id"]}, token=user.token))["pauseSchedule"]
    assert again == paused  # pausing twice is pausing once

    before = utcnow()
    resumed = (await gql.ok(RESUME, {"id": schedule["id"]}, token=user.token))["resumeSchedule"]
    after = utcnow()
    assert resumed["isPaused"] is False
    next_run = when(resumed["nextRunTime"])
    # The first hour boundary after the resume: nothing missed while paused is fired.
    zone = ZoneInfo("UTC")
    assert next_fire_time("0 * * * *", zone, before) <= next_run
    assert next_run <= next_fire_time("0 * * * *", zone, after)
    assert [when(t) for t in resumed["upcomingRunTimes"]] == [
        next_run,
        next_run + timedelta(hours=1),
        next_run + timedelta(hours=2),
    ]


async def test_resuming_after_missed_due_times_fires_none_of_them(gql, user, worker):
    graph = await create_graph(gql, user)
    schedule = await create_schedule(gql, user, graph["id"], cron=YEARLY)
    await gql.ok(PAUSE, {"id": schedule["id"]}, token=user.token)
    resumed = (await gql.ok(RESUME, {"id": schedule["id"]}, token=user.token))["resumeSchedule"]
    assert when(resumed["nextRunTime"]) > utcnow()
    assert when(resumed["nextRunTime"]).month == 1
    control = await create_schedule(gql, user, graph["id"], cron=YEARLY, name="control")
    await make_due([control["id"]])
    await wait_until(lambda: firing_count(control["id"]), what="the control schedule to fire")
    assert await firing_count(schedule["id"]) == 0
    assert await Execution.filter(graph_id=graph["id"]).count() == 1  # the control's


async def test_paused_schedules_do_not_fire_across_two_workers(gql, user, worker):
    """Ten paused schedules, five of them with a due time in the past (a pause that
    raced the clock): through three rounds of two workers firing an unpaused
    control schedule, not one of them fires."""
    graph = await create_graph(gql, user)
    paused = [
        await create_schedule(gql, user, graph["id"], cron=YEARLY, name=f"paused {i}")
        for i in range(10)
    ]
    for schedule in paused:
        await gql.ok(PAUSE, {"id": schedule["id"]}, token=user.token)
    raced = [s["id"] for s in paused[:5]]
    await Schedule.filter(id__in=raced).update(next_run_at=utcnow() - timedelta(minutes=5))
    control = await create_schedule(gql, user, graph["id"], cron=YEARLY, name="control")
    second = WorkerProcess(env=TEST_ENV)
    await second.start()
    try:
        for round_number in range(1, 4):
            # Due after the paused ones: a claim that ignored the pause would take
            # them first (most overdue first).
            await make_due([control["id"]])

            async def control_fired(expected=round_number):
                return await firing_count(control["id"]) >= expected

            await wait_until(control_fired, what=f"round {round_number}")
    finally:
        await second.stop()
    assert await ScheduleFiring.filter(schedule_id__in=[s["id"] for s in paused]).count() == 0
    runs = await Execution.filter(graph_id=graph["id"]).count()
    assert runs == 3  # the control's, one a round
    for schedule in paused:
        row = await shown(gql, user, schedule["id"])
        assert row["isPaused"] is True


# ------------------------------------------------------------------ update


async def test_update_changes_each_field_and_moves_the_due_time(gql, user):
    graph = await create_graph(gql, user)
    await gql.ok(
        "mutation($id: ID!, $g: GraphInput!) { updateGraph(id: $id, graph: $g) { version } }",
        {"id": graph["id"], "g": echo_graph("v2")},
        token=user.token,
    )
    schedule = await create_schedule(gql, user, graph["id"], graphVersion=1)
    changes = {
        "name": "evening echo",
        "cron": "30 2 * * *",
        "timezone": "Europe/Berlin",
        "inputs": {"text": "good evening"},
        "graphVersion": 2,
        "maxCredits": 40,
    }
    updated = (await gql.ok(UPDATE, {"id": schedule["id"], "input": changes}, token=user.token))[
        "updateSchedule"
    ]
    assert updated["name"] == "evening echo" and updated["cron"] == "30 2 * * *"
    assert updated["timezone"] == "Europe/Berlin" and updated["graphVersion"] == 2
    assert updated["inputs"] == {"text": "good evening"} and updated["maxCredits"] == 40
    next_run = when(updated["nextRunTime"]).astimezone(BERLIN)
    assert (next_run.hour, next_run.minute) in ((2, 30), (3, 0))
    assert next_run - utcnow() <= timedelta(days=1, hours=1)
    assert await shown(gql, user, schedule["id"]) == updated

    # Left out fields keep their value; maxCredits: null clears the budget.
    renamed = (
        await gql.ok(
            UPDATE,
            {"id": schedule["id"], "input": {"name": "renamed", "maxCredits": None}},
            token=user.token,
        )
    )["updateSchedule"]
    assert renamed == {**updated, "name": "renamed", "maxCredits": None}


async def test_updating_a_paused_schedule_keeps_it_paused(gql, user):
    graph = await create_graph(gql, user)
    schedule = await create_schedule(gql, user, graph["id"])
    await gql.ok(PAUSE, {"id": schedule["id"]}, token=user.token)
    updated = (
        await gql.ok(
            UPDATE, {"id": schedule["id"], "input": {"cron": "*/5 * * * *"}}, token=user.token
        )
    )["updateSchedule"]
    assert updated["isPaused"] is True and updated["nextRunTime"] is None
    resumed = (await gql.ok(RESUME, {"id": schedule["id"]}, token=user.token))["resumeSchedule"]
    assert when(resumed["nextRunTime"]).minute % 5 == 0


BAD_UPDATES = [
    ({"cron": "every day"}, "BAD_USER_INPUT"),
    ({"cron": "0 0 31 2 *"}, "BAD_USER_INPUT"),
    ({"cron": "* * * * * *"}, "BAD_USER_INPUT"),
    ({"timezone": "Mars/Olympus"}, "BAD_USER_INPUT"),
    ({"name": "   "}, "BAD_USER_INPUT"),
    ({"name": "x" * 201}, "BAD_USER_INPUT"),
    ({"inputs": [1, 2]}, "BAD_USER_INPUT"),
    ({"inputs": {"text": 5}}, "GRAPH_VALIDATION_FAILED"),
    ({"inputs": {}}, "GRAPH_VALIDATION_FAILED"),
    ({"graphVersion": 9}, "NOT_FOUND"),
    ({"maxCredits": 0}, "BAD_USER_INPUT"),
    ({"maxCredits": -1}, "BAD_USER_INPUT"),
    ({"name": "fine", "cron": "0 0 30 2 *"}, "BAD_USER_INPUT"),
]


@pytest.mark.parametrize(("changes", "code"), BAD_UPDATES)
async def test_a_bad_update_is_refused_and_changes_nothing(gql, user, changes, code):
    graph = await create_graph(gql, user)
    schedule = await create_schedule(gql, user, graph["id"])
    before = await shown(gql, user, schedule["id"])
    row_before = await Schedule.get(id=schedule["id"])
    error = await gql.error(UPDATE, {"id": schedule["id"], "input": changes}, token=user.token)
    assert error["extensions"]["code"] == code, error
    assert await shown(gql, user, schedule["id"]) == before
    row_after = await Schedule.get(id=schedule["id"])
    assert (row_after.next_run_at, row_after.name, row_after.cron, row_after.inputs) == (
        row_before.next_run_at,
        row_before.name,
        row_before.cron,
        row_before.inputs,
    )


async def test_a_hostile_update_is_refused(gql, user):
    graph = await create_graph(gql, user)
    schedule = await create_schedule(gql, user, graph["id"])
    before = await shown(gql, user, schedule["id"])
    for changes in (
        {"cron": "*/1 " * 1000},
        {"timezone": "../../etc/passwd"},
        {"inputs": {f"k{i}": i for i in range(5000)}},
    ):
        error = await gql.error(UPDATE, {"id": schedule["id"], "input": changes}, token=user.token)
        assert error["extensions"]["code"] in {"BAD_USER_INPUT", "GRAPH_VALIDATION_FAILED"}
    assert await shown(gql, user, schedule["id"]) == before


async def test_a_preset_schedule_refuses_a_version_it_would_not_run(gql, user):
    """A schedule on a preset fires the preset's version: a graphVersion other than
    the preset's (which the firing would ignore) is refused, in create and update."""
    graph = await create_graph(gql, user)
    await gql.ok(
        "mutation($id: ID!, $g: GraphInput!) { updateGraph(id: $id, graph: $g) { version } }",
        {"id": graph["id"], "g": echo_graph("v2")},
        token=user.token,
    )
    preset = await create_preset(gql, user, graph["id"], graphVersion=1, inputs={"text": "x"})
    schedule = await create_schedule(gql, user, graph["id"], presetId=preset["id"], inputs={})
    assert schedule["graphVersion"] == 1
    before = await shown(gql, user, schedule["id"])
    error = await gql.error(
        UPDATE, {"id": schedule["id"], "input": {"graphVersion": 2}}, token=user.token
    )
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["extensions"]["field"] == "graphVersion"
    assert await shown(gql, user, schedule["id"]) == before
    error = await gql.error(
        "mutation($input: ScheduleInput!) { createSchedule(input: $input) { id } }",
        {
            "input": {
                "graphId": graph["id"],
                "graphVersion": 2,
                "presetId": preset["id"],
                "name": "s",
                "cron": "0 9 * * 1",
            }
        },
        token=user.token,
    )
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    # The preset's own version may be named, and other fields still change.
    same = {"graphVersion": 1, "name": "renamed"}
    updated = (await gql.ok(UPDATE, {"id": schedule["id"], "input": same}, token=user.token))[
        "updateSchedule"
    ]
    assert (updated["graphVersion"], updated["name"]) == (1, "renamed")


async def test_concurrent_updates_of_different_fields_both_land(gql, user):
    """Two clients change different fields at once: each update merges into the
    schedule as it is when it writes, so neither undoes the other's change."""
    graph = await create_graph(gql, user)
    for round_ in range(8):
        schedule = await create_schedule(gql, user, graph["id"], cron="0 3 * * *")
        await asyncio.gather(
            gql.ok(
                UPDATE, {"id": schedule["id"], "input": {"name": f"r{round_}"}}, token=user.token
            ),
            gql.ok(
                UPDATE,
                {"id": schedule["id"], "input": {"cron": "0 4 * * *", "maxCredits": 9}},
                token=user.token,
            ),
        )
        final = await shown(gql, user, schedule["id"])
        assert (final["name"], final["cron"], final["maxCredits"]) == (f"r{round_}", "0 4 * * *", 9)
        assert when(final["nextRunTime"]).hour == 4


# ------------------------------------------------------------------ upcoming run times


async def test_upcoming_run_times_across_spring_forward(gql, user):
    """02:30 every day in Berlin: on 28 March 2027 the clock jumps from 02:00 to
    03:00, and the skipped 02:30 fires at the end of the gap."""
    graph = await create_graph(gql, user)
    schedule = await create_schedule(
        gql, user, graph["id"], cron="30 2 * * *", timezone="Europe/Berlin"
    )
    await Schedule.filter(id=schedule["id"]).update(
        next_run_at=datetime(2027, 3, 27, 1, 30, tzinfo=UTC)
    )
    times = [when(t) for t in (await shown(gql, user, schedule["id"]))["upcomingRunTimes"]]
    assert [t.isoformat() for t in times] == [
        "2027-03-27T02:30:00+01:00",
        "2027-03-28T03:00:00+02:00",
        "2027-03-29T02:30:00+02:00",
    ]


async def test_upcoming_run_times_across_fall_back(gql, user):
    """On 31 October 2027 Berlin's 02:30 happens twice: a fixed-time cron fires at
    the first only; an hourly one fires in both passes."""
    graph = await create_graph(gql, user)
    daily = await create_schedule(
        gql, user, graph["id"], cron="30 2 * * *", timezone="Europe/Berlin"
    )
    hourly = await create_schedule(
        gql, user, graph["id"], cron="30 * * * *", timezone="Europe/Berlin"
    )
    await Schedule.filter(id=daily["id"]).update(
        next_run_at=datetime(2027, 10, 30, 0, 30, tzinfo=UTC)
    )
    await Schedule.filter(id=hourly["id"]).update(
        next_run_at=datetime(2027, 10, 30, 23, 30, tzinfo=UTC)
    )
    rows = {r["id"]: r for r in (await gql.ok(UPCOMING, {"n": 4}, token=user.token))["schedules"]}
    assert rows[daily["id"]]["upcomingRunTimes"][:3] == [
        "2027-10-30T02:30:00+02:00",
        "2027-10-31T02:30:00+02:00",
        "2027-11-01T02:30:00+01:00",
    ]
    assert rows[hourly["id"]]["upcomingRunTimes"] == [
        "2027-10-31T01:30:00+02:00",
        "2027-10-31T02:30:00+02:00",
        "2027-10-31T02:30:00+01:00",
        "2027-10-31T03:30:00+01:00",
    ]


@pytest.mark.parametrize("count", [0, -1, 51, 10_000])
async def test_upcoming_run_times_count_is_bounded(gql, user, count):
    graph = await create_graph(gql, user)
    await create_schedule(gql, user, graph["id"])
    error = await gql.error(UPCOMING, {"n": count}, token=user.token)
    assert error["extensions"]["code"] == "BAD_USER_INPUT"


async def test_fifty_upcoming_run_times(gql, user):
    graph = await create_graph(gql, user)
    schedule = await create_schedule(gql, user, graph["id"], cron="*/15 * * * *")
    rows = (await gql.ok(UPCOMING, {"n": 50}, token=user.token))["schedules"]
    times = [
        when(t) for t in next(r for r in rows if r["id"] == schedule["id"])["upcomingRunTimes"]
    ]
    assert len(times) == 50
    assert all(b - a == timedelta(minutes=15) for a, b in pairwise(times))


def test_an_overdue_schedule_shows_times_after_its_catch_up_firing():
    """Workers were down for an hour: the missed due time fires once, then the cron
    goes on from then, so the times after it are in the future, not the missed
    ones. (The function under Schedule.upcomingRunTimes, on an unsaved row: a
    running scheduler would fire a stored overdue schedule before a query saw it.)"""
    missed = utcnow().replace(second=0, microsecond=0) - timedelta(hours=1)
    row = Schedule(cron="*/10 * * * *", timezone="UTC", next_run_at=missed, is_paused=False)
    before = utcnow()
    times = upcoming_run_times(row, 4)
    assert times[0] == missed  # due now: fired once on the next poll
    assert all(before < t <= utcnow() + timedelta(minutes=40) for t in times[1:]), times
    assert all(b - a == timedelta(minutes=10) for a, b in pairwise(times[1:]))


# ------------------------------------------------------------------ firing history


async def test_firing_history_shows_runs_and_skips_with_reasons(gql, user, worker):
    graph = await create_graph(gql, user)
    schedule = await create_schedule(gql, user, graph["id"], cron=YEARLY, maxCredits=25)
    sid = schedule["id"]
    assert (await history(gql, user, sid))["totalCount"] == 0

    # 1. It fires: the run it started, with the schedule's budget.
    await make_due([sid])
    await wait_until(lambda: firing_count(sid), what="the first firing")
    first = (await history(gql, user, sid))["edges"][0]["node"]
    assert first["outcome"] == "FIRED" and first["reason"] is None
    execution = await Execution.get(id=first["executionId"])
    assert execution.max_credits == 25

    # 2. Its inputs no longer validate (as when a block it needs was disabled).
    await Schedule.filter(id=sid).update(inputs={"text": 5})
    await make_due([sid])

    async def fired_twice():
        return await firing_count(sid) >= 2

    await wait_until(fired_twice, what="the skipped firing")
    invalid = (await history(gql, user, sid))["edges"][0]["node"]
    assert invalid["outcome"] == "SKIPPED_INVALID" and invalid["executionId"] is None
    assert invalid["reason"]
    await Schedule.filter(id=sid).update(inputs={"text": "again"})

    # 3. No credits: skipped, and says so.
    balance = await ledger.get_balance(user.id)
    await ledger.record_transaction(
        user.id, -balance, CreditTransactionType.USAGE, f"drain:{user.id}"
    )
    await make_due([sid])

    async def fired_thrice():
        return await firing_count(sid) >= 3

    await wait_until(fired_thrice, what="the firing without credits")
    page = await history(gql, user, sid)
    assert [e["node"]["outcome"] for e in page["edges"]] == [
        "SKIPPED_NO_BALANCE",
        "SKIPPED_INVALID",
        "FIRED",
    ]
    assert "credits" in page["edges"][0]["node"]["reason"].lower()

    # 4. Paused: nothing comes due, nothing is recorded.
    await gql.ok(PAUSE, {"id": sid}, token=user.token)
    assert (await history(gql, user, sid))["totalCount"] == 3

    # Paging, the latest due time first.
    one = await history(gql, user, sid, first=1)
    assert one["totalCount"] == 3 and one["pageInfo"]["hasNextPage"] is True
    rest = await history(gql, user, sid, first=5, after=one["pageInfo"]["endCursor"])
    assert [e["node"]["outcome"] for e in rest["edges"]] == ["SKIPPED_INVALID", "FIRED"]
    assert rest["pageInfo"]["hasNextPage"] is False
    bad = await gql.error(HISTORY, {"first": 0}, token=user.token)
    assert bad["extensions"]["code"] == "BAD_USER_INPUT"
    bad = await gql.error(HISTORY, {"after": "garbage"}, token=user.token)
    assert bad["extensions"]["code"] == "BAD_USER_INPUT"
    for cursor in hostile_time_cursors():
        bad = await gql.error(HISTORY, {"after": cursor}, token=user.token)
        assert bad["extensions"]["code"] == "BAD_USER_INPUT"


# ------------------------------------------------------------------ ownership, keys


async def test_another_users_schedule_is_not_found_and_unchanged(gql, user, new_user):
    graph = await create_graph(gql, user)
    schedule = await create_schedule(gql, user, graph["id"])
    before = await shown(gql, user, schedule["id"])
    stranger = new_user()
    await gql.ok("{ me { id } }", token=stranger.token)
    for query, extra in (
        (PAUSE, {}),
        (RESUME, {}),
        (UPDATE, {"input": {"name": "mine now"}}),
    ):
        for target in (schedule["id"], str(uuid.uuid4()), "not-an-id"):
            error = await gql.error(query, {"id": target, **extra}, token=stranger.token)
            assert error["extensions"]["code"] == "NOT_FOUND"
    assert (await gql.ok(HISTORY, token=stranger.token))["schedules"] == []
    assert await shown(gql, user, schedule["id"]) == before


async def test_api_keys_need_manage_schedules(gql, user):
    graph = await create_graph(gql, user)
    schedule = await create_schedule(gql, user, graph["id"])
    reader = (await create_key(gql, user, ["READ_GRAPH", "EXECUTE_GRAPH"]))["plainTextKey"]
    error = await gql.error(PAUSE, {"id": schedule["id"]}, api_key=reader)
    assert error["extensions"]["code"] == "FORBIDDEN"
    manager = (await create_key(gql, user, ["MANAGE_SCHEDULES"]))["plainTextKey"]
    paused = (await gql.ok(PAUSE, {"id": schedule["id"]}, api_key=manager))["pauseSchedule"]
    assert paused["isPaused"] is True


async def test_a_list_of_schedules_shows_each_ones_own_history(gql, user):
    """Three schedules with 0, 2 and 5 firings on record, read in one request (one
    statement for all three first pages): each shows its own, newest first."""
    graph = await create_graph(gql, user)
    made = [await create_schedule(gql, user, graph["id"], name=f"s{i}") for i in range(3)]
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for schedule, count in zip(made, (0, 2, 5), strict=True):
        for hour in range(count):
            await ScheduleFiring.create(
                id=uuid.uuid4(),
                schedule_id=schedule["id"],
                due_at=start + timedelta(hours=hour),
                fired_at=start + timedelta(hours=hour, seconds=1),
                outcome="SKIPPED_NO_BALANCE",
                reason=f"hour {hour}",
            )
    rows = (await gql.ok(HISTORY, {"first": 3}, token=user.token))["schedules"]
    pages = {row["id"]: row["executions"] for row in rows}
    for schedule, count in zip(made, (0, 2, 5), strict=True):
        page = pages[schedule["id"]]
        assert page["totalCount"] == count
        assert [e["node"]["reason"] for e in page["edges"]] == [
            f"hour {hour}" for hour in reversed(range(count))
        ][:3]
        assert page["pageInfo"]["hasNextPage"] is (count > 3)
    rest = await history(
        gql, user, made[2]["id"], first=3, after=pages[made[2]["id"]]["pageInfo"]["endCursor"]
    )
    assert [e["node"]["reason"] for e in rest["edges"]] == ["hour 1", "hour 0"]
