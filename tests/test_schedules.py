"""Schedules through GraphQL, fired by real workers (SEMANTICS.md §9).

Firing tests make a schedule due by moving its stored next due time to now
(or into the past, as after downtime): the same state the clock produces, so
the scheduler's claim runs exactly as it would at a cron time, without waiting
for one. One test waits for a real minute boundary.
"""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
from redis.asyncio import Redis

from app.clients.redis import create_redis
from app.clock import utcnow
from app.models import (
    CreditTransactionType,
    Execution,
    ExecutionStatus,
    Graph,
    GraphSource,
    Schedule,
)
from app.services import ledger
from app.services.executions import requeue_stranded_runs
from tests.conftest import TEST_ENV
from tests.execution_helpers import wait_for_end
from tests.graph_builders import create_graph, echo_graph
from tests.harness import WorkerProcess
from tests.test_api_keys import create_key

FIELDS = "id name graphId graphVersion cron timezone inputs nextRunTime lastRunAt createdAt"
CREATE = f"""mutation($input: ScheduleInput!) {{
  createSchedule(input: $input) {{ {FIELDS} }} }}"""
LIST = f"query($graphId: ID) {{ schedules(graphId: $graphId) {{ {FIELDS} }} }}"
DELETE = "mutation($id: ID!) { deleteSchedule(id: $id) }"
UPDATE_TIMEZONE = "mutation($tz: String!) { updateTimezone(timezone: $tz) { timezone } }"
ONBOARDING = "{ onboarding { completedSteps } }"
EXECUTIONS = """query($graphId: ID) { executions(graphId: $graphId, first: 100) {
  totalCount edges { node { id status graphVersion inputs source createdAt } } } }"""
WEEKLY = "0 9 * * 1"
# Never due during a test run unless a test makes it due.
YEARLY = "0 0 1 1 *"


def schedule_input(graph_id: str, **overrides) -> dict:
    return {
        "graphId": graph_id,
        "name": "morning echo",
        "cron": WEEKLY,
        "inputs": {"text": "good morning"},
        **overrides,
    }


async def create_schedule(gql, user, graph_id: str, **overrides) -> dict:
    data = await gql.ok(CREATE, {"input": schedule_input(graph_id, **overrides)}, token=user.token)
    return data["createSchedule"]


async def list_schedules(gql, user, graph_id: str | None = None) -> list[dict]:
    return (await gql.ok(LIST, {"graphId": graph_id}, token=user.token))["schedules"]


async def executions_of(gql, user, graph_id: str) -> list[dict]:
    data = await gql.ok(EXECUTIONS, {"graphId": graph_id}, token=user.token)
    return [edge["node"] for edge in data["executions"]["edges"]]


async def make_due(schedule_ids: list[str], at: datetime | None = None) -> None:
    """What the clock does when a due time comes: the stored next run is now (or past)."""
    await Schedule.filter(id__in=schedule_ids).update(next_run_at=at or utcnow())


async def wait_until(check, timeout: float = 30.0, what: str = "condition"):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await check()
        if result:
            return result
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


async def wait_until_handled(gql, user, schedule: dict, timeout: float = 30.0) -> dict:
    """The schedule once the scheduler has moved its next run past the due time we set."""
    made_due_at = utcnow()

    async def handled():
        for row in await list_schedules(gql, user):
            if row["id"] == schedule["id"] and row["nextRunTime"]:
                if datetime.fromisoformat(row["nextRunTime"]) > made_due_at:
                    return row
        return None

    return await wait_until(handled, timeout, f"schedule {schedule['id']} to be handled")


def when(value: str) -> datetime:
    return datetime.fromisoformat(value)


# ------------------------------------------------------------------ create, list, delete


async def test_create_schedule_shows_the_next_run_in_its_zone(gql, user):
    graph = await create_graph(gql, user)
    before = datetime.now(UTC)
    created = await create_schedule(gql, user, graph["id"], timezone="America/New_York")
    assert created["name"] == "morning echo" and created["cron"] == WEEKLY
    assert created["graphId"] == graph["id"] and created["graphVersion"] == 1
    assert created["timezone"] == "America/New_York"
    assert created["inputs"] == {"text": "good morning"}
    assert created["lastRunAt"] is None
    next_run = when(created["nextRunTime"])
    local = next_run.astimezone(ZoneInfo("America/New_York"))
    assert next_run.utcoffset() == local.utcoffset()  # shown in the schedule's zone
    assert (local.weekday(), local.hour, local.minute, local.second) == (0, 9, 0, 0)
    assert before < next_run <= before + timedelta(days=7)
    assert [s["id"] for s in await list_schedules(gql, user)] == [created["id"]]
    assert [s["id"] for s in await list_schedules(gql, user, graph["id"])] == [created["id"]]
    other_graph = await create_graph(gql, user)
    assert await list_schedules(gql, user, other_graph["id"]) == []
    assert await list_schedules(gql, user, "not-a-uuid") == []


async def test_schedules_are_listed_newest_first(gql, user):
    graph = await create_graph(gql, user)
    first = await create_schedule(gql, user, graph["id"], name="first")
    second = await create_schedule(gql, user, graph["id"], name="second")
    assert [s["id"] for s in await list_schedules(gql, user)] == [second["id"], first["id"]]


async def test_time_zone_defaults_to_the_users_then_utc(gql, user, new_user):
    graph = await create_graph(gql, user)
    assert (await create_schedule(gql, user, graph["id"]))["timezone"] == "UTC"
    await gql.ok(UPDATE_TIMEZONE, {"tz": "Asia/Tokyo"}, token=user.token)
    in_tokyo = await create_schedule(gql, user, graph["id"])
    assert in_tokyo["timezone"] == "Asia/Tokyo"
    assert when(in_tokyo["nextRunTime"]).utcoffset() == timedelta(hours=9)
    local = when(in_tokyo["nextRunTime"])
    assert (local.weekday(), local.hour) == (0, 9)


async def test_graph_version_defaults_to_the_active_one_and_stays_pinned(gql, user):
    graph = await create_graph(gql, user)
    await gql.ok(
        "mutation($id: ID!, $g: GraphInput!) { updateGraph(id: $id, graph: $g) { version } }",
        {"id": graph["id"], "g": echo_graph("echo v2")},
        token=user.token,
    )
    assert (await create_schedule(gql, user, graph["id"]))["graphVersion"] == 2
    assert (await create_schedule(gql, user, graph["id"], graphVersion=1))["graphVersion"] == 1


async def test_create_schedule_completes_the_schedule_agent_step(gql, user):
    graph = await create_graph(gql, user)
    steps = (await gql.ok(ONBOARDING, token=user.token))["onboarding"]["completedSteps"]
    assert "SCHEDULE_AGENT" not in steps
    await create_schedule(gql, user, graph["id"])
    steps = (await gql.ok(ONBOARDING, token=user.token))["onboarding"]["completedSteps"]
    assert "SCHEDULE_AGENT" in steps


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"cron": "every monday at nine"}, "BAD_USER_INPUT"),
        ({"cron": "0 0 9 * * 1"}, "BAD_USER_INPUT"),  # six fields
        ({"cron": "0 9 * * 1 2030"}, "BAD_USER_INPUT"),  # six fields
        ({"cron": "@weekly"}, "BAD_USER_INPUT"),
        ({"cron": "75 9 * * 1"}, "BAD_USER_INPUT"),
        ({"cron": "0 0 31 2 *"}, "BAD_USER_INPUT"),  # never fires
        ({"timezone": "Mars/Olympus_Mons"}, "BAD_USER_INPUT"),
        ({"timezone": ""}, "BAD_USER_INPUT"),
        ({"name": "   "}, "BAD_USER_INPUT"),
        ({"name": "x" * 201}, "BAD_USER_INPUT"),
        ({"inputs": ["good morning"]}, "BAD_USER_INPUT"),
        ({"credentials": "secret"}, "BAD_USER_INPUT"),
        ({"graphVersion": 7}, "NOT_FOUND"),
        ({"graphId": str(uuid.uuid4())}, "NOT_FOUND"),
        ({"graphId": "not-a-uuid"}, "NOT_FOUND"),
        ({"inputs": {}}, "GRAPH_VALIDATION_FAILED"),  # "text" is required
        ({"inputs": {"text": 42}}, "GRAPH_VALIDATION_FAILED"),  # must be a string
        ({"inputs": {"text": "hi", "extra": 1}}, "GRAPH_VALIDATION_FAILED"),
    ],
)
async def test_bad_schedule_input_is_refused_and_stores_nothing(gql, user, overrides, code):
    graph = await create_graph(gql, user)
    error = await gql.error(
        CREATE, {"input": schedule_input(graph["id"], **overrides)}, token=user.token
    )
    assert error["extensions"]["code"] == code, error
    assert await list_schedules(gql, user) == []
    assert not await Schedule.filter(user_id=user.id).exists()
    steps = (await gql.ok(ONBOARDING, token=user.token))["onboarding"]["completedSteps"]
    assert "SCHEDULE_AGENT" not in steps


async def test_validation_failure_names_the_input_node(gql, user):
    graph = await create_graph(gql, user)
    error = await gql.error(
        CREATE, {"input": schedule_input(graph["id"], inputs={})}, token=user.token
    )
    input_node = next(n["id"] for n in graph["nodes"] if n["inputDefault"].get("name") == "text")
    assert "text" in error["extensions"]["nodeErrors"][input_node]["value"]


async def test_another_users_graph_and_schedules_are_not_found(gql, user, new_user):
    graph = await create_graph(gql, user)
    mine = await create_schedule(gql, user, graph["id"])
    stranger = new_user()
    code = await gql.error_code(
        CREATE, {"input": schedule_input(graph["id"])}, token=stranger.token
    )
    assert code == "NOT_FOUND"
    assert await list_schedules(gql, stranger) == []
    assert await list_schedules(gql, stranger, graph["id"]) == []
    assert await gql.error_code(DELETE, {"id": mine["id"]}, token=stranger.token) == "NOT_FOUND"
    # Exactly what an absent schedule gets.
    absent = str(uuid.uuid4())
    assert await gql.error(DELETE, {"id": mine["id"]}, token=stranger.token) == {
        **(await gql.error(DELETE, {"id": absent}, token=stranger.token)),
    }
    assert [s["id"] for s in await list_schedules(gql, user)] == [mine["id"]]
    assert not await Schedule.filter(user_id=stranger.id).exists()


async def test_delete_schedule(gql, user):
    graph = await create_graph(gql, user)
    kept = await create_schedule(gql, user, graph["id"], name="kept")
    gone = await create_schedule(gql, user, graph["id"], name="gone")
    assert (await gql.ok(DELETE, {"id": gone["id"]}, token=user.token))["deleteSchedule"] == gone[
        "id"
    ]
    assert [s["id"] for s in await list_schedules(gql, user)] == [kept["id"]]
    assert await gql.error_code(DELETE, {"id": gone["id"]}, token=user.token) == "NOT_FOUND"
    assert await gql.error_code(DELETE, {"id": "not-a-uuid"}, token=user.token) == "NOT_FOUND"
    assert [s["id"] for s in await list_schedules(gql, user)] == [kept["id"]]


async def test_deleting_a_graph_deletes_its_schedules(gql, user):
    graph = await create_graph(gql, user)
    other = await create_graph(gql, user)
    await create_schedule(gql, user, graph["id"])
    survivor = await create_schedule(gql, user, other["id"])
    await gql.ok(
        "mutation($id: ID!) { deleteGraph(id: $id) }", {"id": graph["id"]}, token=user.token
    )
    assert [s["id"] for s in await list_schedules(gql, user)] == [survivor["id"]]
    assert not await Schedule.filter(graph_id=graph["id"]).exists()


async def test_api_keys_need_manage_schedules(gql, user):
    graph = await create_graph(gql, user)
    existing = await create_schedule(gql, user, graph["id"])
    reader = (await create_key(gql, user, ["READ_GRAPH", "EXECUTE_GRAPH"]))["plainTextKey"]
    for query, variables in (
        (LIST, {"graphId": None}),
        (CREATE, {"input": schedule_input(graph["id"])}),
        (DELETE, {"id": existing["id"]}),
    ):
        assert await gql.error_code(query, variables, api_key=reader) == "FORBIDDEN"
        assert await gql.error_code(query, variables) == "UNAUTHENTICATED"
    assert await Schedule.filter(user_id=user.id).count() == 1

    manager = (await create_key(gql, user, ["MANAGE_SCHEDULES"]))["plainTextKey"]
    made = await gql.ok(CREATE, {"input": schedule_input(graph["id"])}, api_key=manager)
    assert made["createSchedule"]["graphId"] == graph["id"]
    listed = (await gql.ok(LIST, {"graphId": graph["id"]}, api_key=manager))["schedules"]
    assert {s["id"] for s in listed} == {existing["id"], made["createSchedule"]["id"]}
    await gql.ok(DELETE, {"id": existing["id"]}, api_key=manager)
    assert [s["id"] for s in await list_schedules(gql, user)] == [made["createSchedule"]["id"]]


# ------------------------------------------------------------------ firing


async def test_schedule_fires_at_its_cron_time(gql, user, worker):
    """A real minute boundary: no help from the test."""
    graph = await create_graph(gql, user)
    schedule = await create_schedule(gql, user, graph["id"], cron="* * * * *")
    due = when(schedule["nextRunTime"])
    assert due.second == 0 and due > utcnow()

    async def fired():
        rows = await list_schedules(gql, user, graph["id"])
        return rows[0] if rows[0]["lastRunAt"] else None

    after = await wait_until(fired, timeout=90, what="the first firing")
    await gql.ok(DELETE, {"id": schedule["id"]}, token=user.token)
    assert when(after["lastRunAt"]) >= due
    assert when(after["nextRunTime"]) > due
    runs = await executions_of(gql, user, graph["id"])
    assert len(runs) == 1
    run = runs[0]
    assert run["source"] == "SCHEDULE" and run["graphVersion"] == 1
    assert run["inputs"] == {"text": "good morning"}
    assert when(run["createdAt"]) >= due
    done = await wait_for_end(gql, user, run["id"])
    assert done["status"] == "COMPLETED" and done["outputs"] == {"result": ["good morning"]}


async def test_due_schedules_fire_exactly_once_with_two_workers(gql, user, worker):
    graph = await create_graph(gql, user)
    count = 30
    schedules = [
        await create_schedule(gql, user, graph["id"], cron=YEARLY, inputs={"text": f"run {i}"})
        for i in range(count)
    ]
    ids = [s["id"] for s in schedules]
    second = WorkerProcess(env=TEST_ENV)
    await second.start()
    try:
        for round_number in range(1, 4):
            await make_due(ids)

            async def all_handled():
                rows = await Schedule.filter(id__in=ids)
                return all(r.next_run_at and r.next_run_at > utcnow() for r in rows)

            await wait_until(all_handled, what=f"round {round_number}")
            # A few more polls of both workers: nothing fires a second time.
            await asyncio.sleep(3)
            runs = await Execution.filter(graph_id=graph["id"]).values_list("inputs", flat=True)
            per_schedule = {f"run {i}": 0 for i in range(count)}
            for inputs in runs:
                per_schedule[inputs["text"]] += 1
            assert set(per_schedule.values()) == {round_number}, per_schedule
    finally:
        await second.stop()
    fired_by_second = second.log().count(" fired for ")
    print(f"second worker fired {fired_by_second} of {3 * count}")
    rows = await list_schedules(gql, user, graph["id"])
    assert all(r["lastRunAt"] for r in rows)
    assert all(when(r["nextRunTime"]).month == 1 for r in rows)


async def test_missed_firings_run_once_after_downtime(gql, user, worker):
    graph = await create_graph(gql, user)
    schedule = await create_schedule(gql, user, graph["id"], cron="*/5 * * * *")
    # As if every worker had been down for three hours: 36 due times missed.
    await make_due([schedule["id"]], utcnow() - timedelta(hours=3))
    handled = await wait_until_handled(gql, user, schedule)
    await asyncio.sleep(2)
    runs = await executions_of(gql, user, graph["id"])
    assert len(runs) == 1 and runs[0]["source"] == "SCHEDULE"
    next_run = when(handled["nextRunTime"])
    assert next_run > utcnow() - timedelta(seconds=5)
    assert next_run.minute % 5 == 0 and next_run.second == 0
    assert handled["lastRunAt"] is not None


async def test_firing_without_credits_is_skipped_and_counted(gql, api, user, worker):
    graph = await create_graph(gql, user)
    schedule = await create_schedule(gql, user, graph["id"], cron=YEARLY)
    balance = await ledger.get_balance(user.id)
    await ledger.record_transaction(
        user.id, -balance, CreditTransactionType.USAGE, f"drain:{user.id}"
    )
    skipped_before = await skipped_for_no_balance(api)
    await make_due([schedule["id"]])
    handled = await wait_until_handled(gql, user, schedule)
    assert handled["lastRunAt"] is None
    assert when(handled["nextRunTime"]).month == 1  # on to the next due time
    assert await executions_of(gql, user, graph["id"]) == []
    assert await skipped_for_no_balance(api) >= skipped_before + 1
    assert logged_by_a_worker(f"schedule {schedule['id']} skipped")


async def skipped_for_no_balance(api) -> int:
    """SKIPPED_NO_BALANCE firings as /metrics shows them, plus those counted by
    workers on another Redis prefix of this run (conftest's Stripe worker shares
    the database, so it may be the one that polls a due schedule first)."""
    async with httpx.AsyncClient(base_url=api.base_url) as client:
        text = (await client.get("/metrics")).text
    assert "# TYPE agentgraph_schedule_firings_total counter" in text
    shown = 0
    for line in text.splitlines():
        if line.startswith('agentgraph_schedule_firings_total{outcome="SKIPPED_NO_BALANCE"}'):
            shown = int(float(line.split()[-1]))
    prefix = TEST_ENV["REDIS_PREFIX"]
    redis = Redis.from_url(TEST_ENV["REDIS_URL"])
    try:
        elsewhere = 0
        async for key in redis.scan_iter(match=f"{prefix}*metrics:counters"):
            if key.decode() != f"{prefix}metrics:counters":
                elsewhere += int(await redis.hget(key, "schedule_firings|SKIPPED_NO_BALANCE") or 0)
    finally:
        await redis.aclose()
    return shown + elsewhere


def logged_by_a_worker(line: str) -> bool:
    """Whether any worker process wrote this line (see skipped_for_no_balance)."""
    return any(
        line in path.read_text(errors="replace")
        for path in Path(tempfile.gettempdir()).glob("agentgraph-worker-*.log")
    )


async def test_schedule_runs_its_pinned_version_after_the_graph_changes(gql, user, worker):
    graph = await create_graph(gql, user)
    schedule = await create_schedule(gql, user, graph["id"], cron=YEARLY)
    await gql.ok(
        "mutation($id: ID!, $g: GraphInput!) { updateGraph(id: $id, graph: $g) { version } }",
        {"id": graph["id"], "g": echo_graph("echo v2")},
        token=user.token,
    )
    await make_due([schedule["id"]])
    await wait_until_handled(gql, user, schedule)
    runs = await executions_of(gql, user, graph["id"])
    assert [run["graphVersion"] for run in runs] == [1]


async def test_schedule_whose_graph_version_vanished_never_fires_and_is_removed(gql, user, worker):
    graph = await create_graph(gql, user)
    schedule = await create_schedule(gql, user, graph["id"], cron=YEARLY)
    # A graph deleted behind the schedule's back (deleteGraph itself also deletes
    # schedules): the version is gone when the schedule comes due.
    await Graph.filter(graph_id=graph["id"]).delete()
    await make_due([schedule["id"]])

    async def removed():
        return not await Schedule.filter(id=schedule["id"]).exists()

    await wait_until(removed, what="the orphaned schedule to be removed")
    assert await list_schedules(gql, user) == []
    assert not await Execution.filter(graph_id=graph["id"]).exists()
    assert logged_by_a_worker(f"schedule {schedule['id']} deleted")


async def test_a_scheduled_run_that_never_reached_the_queue_is_enqueued_again(
    gql, user, worker, settings
):
    """What a worker dying between a firing's commit and its enqueue leaves behind:
    a QUEUED execution with no job. The scheduler's sweep enqueues it, once."""
    graph = await create_graph(gql, user)
    stranded = await Execution.create(
        id=uuid.uuid4(),
        user_id=user.id,
        graph_id=graph["id"],
        graph_version=1,
        status=ExecutionStatus.QUEUED,
        source=GraphSource.SCHEDULE,
        inputs={"text": "late but once"},
    )
    await Execution.filter(id=stranded.id).update(created_at=utcnow() - timedelta(minutes=2))
    redis = create_redis(settings)
    try:
        assert await requeue_stranded_runs(settings, redis, utcnow()) >= 1
        done = await wait_for_end(gql, user, str(stranded.id))
        assert done["status"] == "COMPLETED" and done["outputs"] == {"result": ["late but once"]}
        assert await requeue_stranded_runs(settings, redis, utcnow()) == 0
    finally:
        await redis.aclose()
