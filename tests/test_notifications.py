"""Notifications, in the app and by email (issue 17): what a user is told when
their scheduled runs end, their credits run low, and what they read, live and
in the list. Mail goes through the real aiosmtplib client to a real local SMTP
server (tests/smtp_stand_in.py) and is read back from it.

Notifications are made after the thing they are about (a run's end is written,
then notified, then its job returns), so "nothing was sent" is checked once the
run's arq job is complete, never after a pause.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from arq.jobs import Job, JobStatus

from app.models import Execution, Notification
from app.services.notifications import digest_job_id, email_job_id
from tests.conftest import TEST_ENV
from tests.execution_helpers import execute, wait_for_end
from tests.graph_builders import create_graph, echo_graph, node
from tests.harness import ApiServer, GraphQLClient, WorkerProcess, graphql_ws
from tests.notification_helpers import (
    EVENTS,
    LIST,
    MARK_READ,
    Queue,
    failing_graph,
    notifications_of,
    set_preferences,
    wait_for_notifications,
)
from tests.smtp_stand_in import SilentSmtp, bodies
from tests.test_api_keys import create_key
from tests.test_schedules import create_schedule, executions_of, make_due, wait_until
from workers.mail_lane import MAIL_MAX_JOBS

ADJUST = """mutation($u: ID!, $a: Int!, $r: String!) {
  adminAdjustCredits(userId: $u, amount: $a, reason: $r) { amount runningBalance } }"""


@pytest.fixture
async def queue(settings):
    q = Queue(settings)
    try:
        yield q
    finally:
        await q.aclose()


@pytest.fixture
async def person(new_user, gql):
    someone = new_user()
    await gql.ok("{ me { id } }", token=someone.token)
    return someone


def auth(user) -> dict:
    return {"Authorization": f"Bearer {user.token}"}


async def next_event(ws, op_id: str) -> dict:
    while True:
        message = await ws.receive(timeout=30)
        if message.get("id") != op_id:
            continue
        assert message["type"] == "next", message
        assert "errors" not in message["payload"], message
        return message["payload"]["data"]["notificationEvents"]


async def scheduled_runs(gql, user, graph_id: str, count: int, text: str) -> list[dict]:
    """Fire `count` schedules of the graph at once; their runs once all ended."""
    schedules = [
        await create_schedule(gql, user, graph_id, name=f"s{i}", inputs={"text": text})
        for i in range(count)
    ]
    await make_due([s["id"] for s in schedules])

    async def ended():
        runs = await executions_of(gql, user, graph_id)
        done = [r for r in runs if r["status"] in ("COMPLETED", "FAILED")]
        return done if len(done) >= count else None

    return await wait_until(ended, 60, f"{count} scheduled runs to end")


# ------------------------------------------------------------------ the done-when


async def test_a_failed_scheduled_run_sends_one_email_and_one_in_app_notification(
    api, gql, worker, smtp_server, person, queue
):
    graph = await create_graph(gql, person, failing_graph("nightly import"))
    async with graphql_ws(api.ws_url, auth(person)) as ws:
        op_id = await ws.subscribe(EVENTS)
        snapshot = await next_event(ws, op_id)
        assert snapshot == {"unreadCount": 0, "notification": None}
        [run] = await scheduled_runs(gql, person, graph["id"], 1, "not json")
        live = await next_event(ws, op_id)
    assert run["status"] == "FAILED" and run["source"] == "SCHEDULE"
    assert live["unreadCount"] == 1
    note = live["notification"]
    assert note["type"] == "BLOCK_EXECUTION_FAILED"
    assert note["title"] == "Your scheduled run of nightly import failed"
    assert note["data"]["executionId"] == run["id"] and note["data"]["status"] == "FAILED"
    assert note["readAt"] is None

    [mail] = await smtp_server.wait_for(person.email, 1)
    assert mail["Subject"] == "Your scheduled run of nightly import failed"
    assert mail["From"] == TEST_ENV["MAIL_FROM"]
    assert mail["Message-ID"] == f"<notification-{note['id']}@agentgraph>"
    text, html = bodies(mail)
    assert run["id"] in text and "nightly import failed" in text
    assert "<h2" in html and "https://app.example.test/profile/settings" in html

    await queue.wait_run_done(run["id"])
    [listed] = await wait_for_notifications(gql, person, 1, emailStatus="SENT")
    assert listed["id"] == note["id"]
    assert len(await notifications_of(gql, person)) == 1
    assert len(smtp_server.to(person.email)) == 1


async def test_no_email_and_no_notification_when_that_preference_is_off(
    gql, worker, smtp_server, person, queue
):
    await set_preferences(gql, person, BLOCK_EXECUTION_FAILED=False)
    graph = await create_graph(gql, person, failing_graph())
    [failed] = await scheduled_runs(gql, person, graph["id"], 1, "not json")
    assert failed["status"] == "FAILED"
    await queue.wait_run_done(failed["id"])
    assert await notifications_of(gql, person) == []
    # Finished runs are another preference, still on.
    echo = await create_graph(gql, person, echo_graph())
    [done] = await scheduled_runs(gql, person, echo["id"], 1, "fine")
    assert done["status"] == "COMPLETED"
    [mail] = await smtp_server.wait_for(person.email, 1)
    assert mail["Subject"] == "Your scheduled run of echo finished"
    [note] = await notifications_of(gql, person)
    assert note["type"] == "AGENT_RUN"


async def test_the_eleventh_notification_of_a_day_goes_into_the_digest(
    gql, worker, smtp_server, person, queue
):
    prefs = await set_preferences(gql, person, dailyLimit=10)
    assert prefs["dailyLimit"] == 10
    graph = await create_graph(gql, person, failing_graph("flaky"))
    runs = await scheduled_runs(gql, person, graph["id"], 11, "not json")
    for run in runs:
        await queue.wait_run_done(run["id"])
    mails = await smtp_server.wait_for(person.email, 10)
    notes = sorted(await notifications_of(gql, person), key=lambda n: n["createdAt"])
    assert len(notes) == 11
    statuses = [n["emailStatus"] for n in notes]
    assert statuses[10] == "DIGEST"
    assert set(statuses[:10]) <= {"PENDING", "SENT"}
    await wait_for_notifications(gql, person, 10, emailStatus="SENT")

    # The digest waits for the end of the user's day (UTC here), plus a minute.
    day = datetime.fromisoformat(notes[10]["createdAt"]).astimezone(UTC).date()
    job_id = digest_job_id(queue.settings, person.id, day.isoformat())
    due = await queue.deferred_until(job_id)
    midnight = datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC)
    assert due == (midnight + timedelta(minutes=1)).timestamp() * 1000
    assert len(smtp_server.to(person.email)) == 10
    await queue.make_due(job_id)
    mails = await smtp_server.wait_for(person.email, 11)
    digest = mails[-1]
    assert digest["Subject"] == f"1 more notification from {day.isoformat()}"
    text, html = bodies(digest)
    assert "limit of 10 emails a day" in text
    assert notes[10]["title"] in text and notes[10]["title"] in html
    await wait_for_notifications(gql, person, 1, emailStatus="DIGESTED")
    await queue.wait_done(job_id)
    assert len(smtp_server.to(person.email)) == 11


# ------------------------------------------------------------------ delivery


async def test_mail_is_retried_until_the_server_takes_it(gql, worker, smtp_server, person, queue):
    smtp_server.temporary_failures[person.email] = 2
    name = "<img src=x onerror=alert(1)>\r\nBcc: someone@example.com"
    graph = await create_graph(gql, person, failing_graph(name))
    [run] = await scheduled_runs(gql, person, graph["id"], 1, "not json")
    [mail] = await smtp_server.wait_for(person.email, 1)
    # A name the user chose stays text: escaped in HTML, one line in the subject.
    assert mail["Subject"] == (
        "Your scheduled run of <img src=x onerror=alert(1)> Bcc: someone@example.com failed"
    )
    assert mail["Bcc"] is None
    _, html = bodies(mail)
    assert "&lt;img src=x onerror=alert(1)&gt;" in html and "<img" not in html
    [note] = await wait_for_notifications(gql, person, 1, emailStatus="SENT")
    assert smtp_server.attempts[person.email] == 3
    notification = await Notification.get(id=note["id"])
    await queue.wait_done(email_job_id(queue.settings, notification.id))
    assert len(smtp_server.to(person.email)) == 1
    assert run["status"] == "FAILED"


async def test_a_mailbox_refused_for_good_is_not_retried(gql, worker, smtp_server, person, queue):
    smtp_server.refused.add(person.email)
    graph = await create_graph(gql, person, failing_graph())
    await scheduled_runs(gql, person, graph["id"], 1, "not json")
    [note] = await wait_for_notifications(gql, person, 1, emailStatus="FAILED")
    await queue.wait_done(email_job_id(queue.settings, note["id"]))
    assert smtp_server.attempts[person.email] == 1
    assert smtp_server.to(person.email) == []


@pytest.fixture(scope="module")
async def in_app_only(database):
    """A stack without SMTP_URL whose every run counts as long (threshold 0)."""
    env = {
        **TEST_ENV,
        "SMTP_URL": "",
        "LONG_RUN_NOTIFY_SECONDS": "0",
        "SCHEDULER_ENABLED": "false",
        "REDIS_PREFIX": TEST_ENV["REDIS_PREFIX"] + "in-app:",
    }
    api = ApiServer(env)
    worker = WorkerProcess(env)
    await api.start()
    await worker.start()
    client = GraphQLClient(api.base_url)
    try:
        yield api, client, env
    finally:
        await client.aclose()
        await worker.stop()
        await api.stop()


async def test_without_smtp_url_notifications_are_in_app_only(in_app_only, new_user, smtp_server):
    _, client, _ = in_app_only
    someone = new_user()
    graph = await create_graph(client, someone)
    run = await execute(client, someone, graph["id"], {"text": "hi"})
    assert (await wait_for_end(client, someone, run["id"]))["status"] == "COMPLETED"
    [note] = await wait_for_notifications(client, someone, 1)
    assert note["type"] == "AGENT_RUN" and note["emailStatus"] == "NONE"
    assert note["title"] == "Your run of echo finished"
    assert await Notification.filter(user_id=someone.id, email_status="PENDING").count() == 0
    assert smtp_server.to(someone.email) == []


async def test_a_silent_mail_server_never_holds_back_runs(database, new_user):
    """Mail jobs waiting on a relay that does not answer used to take every job slot
    of the worker (arq's ten): everyone's runs then waited for SMTP timeouts. Mail
    now has a queue and a few slots of its own."""
    silent = SilentSmtp()
    await silent.start()
    env = {
        **TEST_ENV,
        "SMTP_URL": f"smtp://127.0.0.1:{silent.port}",
        "LONG_RUN_NOTIFY_SECONDS": "0",
        "SCHEDULER_ENABLED": "false",
        "REDIS_PREFIX": f"{TEST_ENV['REDIS_PREFIX']}silent-{uuid.uuid4().hex[:8]}:",
    }
    api, worker = ApiServer(env), WorkerProcess(env)
    await api.start()
    await worker.start()
    client = GraphQLClient(api.base_url)
    try:
        someone = new_user()
        graph = await create_graph(client, someone)
        # Every run notifies (threshold 0): more mail than the worker has job slots.
        runs = [await execute(client, someone, graph["id"], {"text": "x"}) for _ in range(12)]
        for run in runs:
            assert (await wait_for_end(client, someone, run["id"]))["status"] == "COMPLETED"

        async def lane_full() -> bool:
            return silent.held >= MAIL_MAX_JOBS

        await wait_until(lane_full, 30, "the mail lane to fill")
        # With every mail slot waiting on the relay, a run still starts and ends.
        late = await execute(client, someone, graph["id"], {"text": "late"})
        assert (await wait_for_end(client, someone, late["id"], 60))["status"] == "COMPLETED"
        assert silent.max_held == MAIL_MAX_JOBS
    finally:
        await client.aclose()
        await silent.stop()
        await worker.stop()
        await api.stop()


async def test_list_pages_newest_first_and_marking_read(in_app_only, new_user):
    api, client, _ = in_app_only
    someone, other = new_user(), new_user()
    graph = await create_graph(client, someone)
    for i in range(3):
        run = await execute(client, someone, graph["id"], {"text": str(i)})
        await wait_for_end(client, someone, run["id"])
    notes = await wait_for_notifications(client, someone, 3)
    assert [n["createdAt"] for n in notes] == sorted((n["createdAt"] for n in notes), reverse=True)
    page = (await client.ok(LIST, {"unread": False, "first": 2}, token=someone.token))[
        "notifications"
    ]
    assert page["totalCount"] == 3 and page["unreadCount"] == 3
    assert page["pageInfo"]["hasNextPage"]
    rest = (
        await client.ok(
            LIST,
            {"unread": False, "first": 2, "after": page["pageInfo"]["endCursor"]},
            token=someone.token,
        )
    )["notifications"]
    seen = [e["node"]["id"] for e in page["edges"] + rest["edges"]]
    assert seen == [n["id"] for n in notes] and not rest["pageInfo"]["hasNextPage"]

    # Another user's ids and ids that are no ids change nothing for anyone.
    other_graph = await create_graph(client, other)
    other_run = await execute(client, other, other_graph["id"], {"text": "x"})
    await wait_for_end(client, other, other_run["id"])
    [theirs] = await wait_for_notifications(client, other, 1)
    marked = await client.ok(MARK_READ, {"ids": [theirs["id"], "nope", ""]}, token=someone.token)
    assert marked["markNotificationsRead"] == 0
    assert (await notifications_of(client, other))[0]["readAt"] is None

    async with graphql_ws(api.ws_url, auth(someone)) as ws:
        op_id = await ws.subscribe(EVENTS)
        assert (await next_event(ws, op_id))["unreadCount"] == 3
        one = await client.ok(MARK_READ, {"ids": [notes[0]["id"]]}, token=someone.token)
        assert one["markNotificationsRead"] == 1
        assert await next_event(ws, op_id) == {"unreadCount": 2, "notification": None}
        again = await client.ok(MARK_READ, {"ids": [notes[0]["id"]]}, token=someone.token)
        assert again["markNotificationsRead"] == 0
        unread = await notifications_of(client, someone, unread=True)
        assert [n["id"] for n in unread] == [n["id"] for n in notes[1:]]
        everything = await client.ok(MARK_READ, {"ids": None}, token=someone.token)
        assert everything["markNotificationsRead"] == 2
        assert (await next_event(ws, op_id))["unreadCount"] == 0
    assert await notifications_of(client, someone, unread=True) == []
    assert all(n["readAt"] for n in await notifications_of(client, someone))


async def test_bad_list_and_mark_input_is_refused(gql, person):
    for variables in ({"first": 0}, {"first": 101}, {"first": 5, "after": "not-a-cursor"}):
        code = await gql.error_code(LIST, {"unread": False, **variables}, token=person.token)
        assert code == "BAD_USER_INPUT", variables
    ids = [f"00000000-0000-0000-0000-{i:012d}" for i in range(1001)]
    assert await gql.error_code(MARK_READ, {"ids": ids}, token=person.token) == "BAD_USER_INPUT"


async def test_api_keys_and_strangers_cannot_read_notifications(api, gql, person):
    key = (await create_key(gql, person, ["READ_GRAPH", "READ_EXECUTION", "EXECUTE_GRAPH"]))[
        "plainTextKey"
    ]
    for query, variables in ((LIST, {"unread": False, "first": 5}), (MARK_READ, {"ids": None})):
        assert await gql.error_code(query, variables, api_key=key) == "FORBIDDEN"
        assert await gql.error_code(query, variables) == "UNAUTHENTICATED"
    async with graphql_ws(api.ws_url, {"X-API-Key": key}) as ws:
        op_id = await ws.subscribe(EVENTS)
        message = await ws.receive()
        assert message["id"] == op_id
        errors = message["payload"] if message["type"] == "error" else message["payload"]["errors"]
        assert errors[0]["extensions"]["code"] == "FORBIDDEN"


# ------------------------------------------------------------------ the other kinds


async def test_low_balance_warns_once_until_credits_are_added(
    gql, worker, smtp_server, person, new_user, queue
):
    admin = new_user(admin=True)
    graph = await create_graph(
        gql,
        person,
        {
            "name": "one credit",
            "nodes": [node("wait", "Wait", seconds=0, input="x")],
            "links": [],
        },
    )
    adjusted = await gql.ok(
        ADJUST, {"u": str(person.id), "a": -150, "r": "test"}, token=admin.token
    )
    assert adjusted["adminAdjustCredits"]["runningBalance"] == 100

    async def run_once():
        run = await execute(gql, person, graph["id"])
        await wait_for_end(gql, person, run["id"])
        await queue.wait_run_done(run["id"])

    await run_once()  # 100 -> 99: below LOW_BALANCE_CREDITS (100)
    [warning] = await wait_for_notifications(gql, person, 1, type="LOW_BALANCE")
    assert warning["data"] == {"balance": 99, "threshold": 100}
    await run_once()  # 98: still low, said already
    assert len(await notifications_of(gql, person)) == 1
    await gql.ok(ADJUST, {"u": str(person.id), "a": 2, "r": "test"}, token=admin.token)
    await run_once()  # 100 -> 99 again, after credits came in: a new warning
    warnings = await wait_for_notifications(gql, person, 2, type="LOW_BALANCE")
    assert len(warnings) == 2
    mails = await smtp_server.wait_for(person.email, 2)
    assert all(m["Subject"] == "Your credits are running low" for m in mails)


async def test_daily_summary_of_yesterday_is_made_once(gql, worker, smtp_server, person, queue):
    graph = await create_graph(gql, person, echo_graph("summed up"))
    run = await execute(gql, person, graph["id"], {"text": "hi"})
    await wait_for_end(gql, person, run["id"])
    await queue.wait_run_done(run["id"])
    # What the clock does: the run is now yesterday's.
    yesterday = datetime.now(UTC) - timedelta(days=1)
    await Execution.filter(id=run["id"]).update(created_at=yesterday)
    await queue.run("create_daily_summaries")
    [summary] = await wait_for_notifications(gql, person, 1, type="DAILY_SUMMARY")
    day = yesterday.date().isoformat()
    assert summary["title"] == f"Your day on agentgraph: {day}"
    assert summary["body"].startswith("1 run (1 completed, 0 failed), 0 credits spent")
    [mail] = await smtp_server.wait_for(person.email, 1)
    assert mail["Subject"] == summary["title"]
    await queue.run("create_daily_summaries")
    assert len(await notifications_of(gql, person)) == 1


async def test_a_failed_auto_top_up_is_notified(
    stripe_gql, stripe_api, stripe_worker, smtp_server, new_user, stripe_stand_in
):
    from app.models import User
    from tests.test_credits import AUTO, balance, paid_top_up

    person = new_user()
    await stripe_gql.ok("{ me { id } }", token=person.token)
    await paid_top_up(stripe_gql, stripe_api, stripe_stand_in, person, 500)
    start = await balance(stripe_gql, person)
    await stripe_gql.ok(AUTO, {"t": start, "a": 1000}, token=person.token)
    customer = (await User.get(id=person.id)).stripe_customer_id
    stripe_stand_in.declining.add(customer)
    graph = await create_graph(
        stripe_gql, person, {"name": "w", "nodes": [node("w", "Wait", seconds=0)], "links": []}
    )
    run = await execute(stripe_gql, person, graph["id"])
    await wait_for_end(stripe_gql, person, run["id"])
    [note] = await wait_for_notifications(stripe_gql, person, 1, type="AUTO_TOP_UP_FAILED")
    assert "declined" in note["body"]
    [mail] = await smtp_server.wait_for(person.email, 1)
    assert mail["Subject"] == "Your automatic top-up failed"
    assert await balance(stripe_gql, person) == start - 1


async def test_concurrent_notifications_respect_the_daily_limit(gql, worker, person, queue):
    """Ten failing runs at once with a limit of 3: exactly 3 emails, 7 for the digest."""
    await set_preferences(gql, person, dailyLimit=3)
    graph = await create_graph(gql, person, failing_graph())
    runs = await scheduled_runs(gql, person, graph["id"], 10, "not json")
    for run in runs:
        await queue.wait_run_done(run["id"])
    statuses = [n["emailStatus"] for n in await notifications_of(gql, person)]
    assert len(statuses) == 10
    assert sum(s in ("PENDING", "SENT") for s in statuses) == 3
    assert statuses.count("DIGEST") == 7


async def test_the_sweep_sends_mail_whose_enqueue_was_lost(gql, worker, smtp_server, person, queue):
    """What a process that died between its commit and its enqueue leaves: a
    PENDING email and a digest nobody scheduled. The sweep (every five minutes)
    enqueues both."""
    from app.models import EmailStatus, NotificationType

    now = datetime.now(UTC)
    stranded = await Notification.create(
        id=uuid.uuid4(),
        user_id=person.id,
        type=NotificationType.AGENT_RUN,
        key=f"test-stranded:{person.id}",
        title="A stranded notification",
        body="Its email was never enqueued.",
        created_at=now - timedelta(minutes=5),
        day=now.date().isoformat(),
        email_status=EmailStatus.PENDING,
    )
    old_day = (now - timedelta(days=2)).date().isoformat()
    await Notification.create(
        id=uuid.uuid4(),
        user_id=person.id,
        type=NotificationType.AGENT_RUN,
        key=f"test-undigested:{person.id}",
        title="Beyond an old day's limit",
        body="Its digest was never scheduled.",
        created_at=now - timedelta(days=2),
        day=old_day,
        email_status=EmailStatus.DIGEST,
    )
    await queue.run("sweep_notification_mail")
    mails = await smtp_server.wait_for(person.email, 2)
    assert sorted(m["Subject"] for m in mails) == [
        f"1 more notification from {old_day}",
        "A stranded notification",
    ]
    await wait_for_notifications(gql, person, 1, emailStatus="SENT", id=str(stranded.id))
    await wait_for_notifications(gql, person, 1, emailStatus="DIGESTED")


async def test_a_digest_refused_for_good_is_not_sent_again_and_again(
    gql, worker, smtp_server, person, queue
):
    """A digest the relay refused for good (550) stayed DIGEST: the sweep picked it up
    again every time its job's result expired, and asked the relay again, forever."""
    from app.models import EmailStatus, NotificationType

    smtp_server.refused.add(person.email)
    now = datetime.now(UTC)
    old_day = (now - timedelta(days=2)).date().isoformat()
    await Notification.create(
        id=uuid.uuid4(),
        user_id=person.id,
        type=NotificationType.AGENT_RUN,
        key=f"test-refused-digest:{person.id}",
        title="Beyond an old day's limit",
        body="Its digest is refused.",
        created_at=now - timedelta(days=2),
        day=old_day,
        email_status=EmailStatus.DIGEST,
    )
    await queue.run("sweep_notification_mail")
    await queue.wait_done(digest_job_id(queue.settings, person.id, old_day))
    assert smtp_server.attempts[person.email] == 1
    [note] = await wait_for_notifications(gql, person, 1, emailStatus="FAILED")
    # Once its result expired (an hour), the sweep found nothing more to send for it;
    # it enqueued the same digest again before.
    job_id = digest_job_id(queue.settings, person.id, old_day)
    await queue.redis.delete(f"arq:result:{job_id}")
    await queue.run("sweep_notification_mail")
    status = await Job(job_id, queue.redis, _queue_name=queue.mail).status()
    assert status == JobStatus.not_found
    assert note["emailStatus"] == "FAILED" and smtp_server.attempts[person.email] == 1
