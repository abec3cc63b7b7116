"""Reading notifications as a client does, and waiting for the work behind them."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from arq.jobs import Job, JobStatus

from app.clients.redis import arq_mail_queue_name, arq_queue_name, create_redis
from app.services.executions import run_job_id
from app.settings import Settings
from tests.graph_builders import link, node

NOTIFICATION_FIELDS = "id type title body data createdAt readAt emailStatus"
LIST = f"""query($unread: Boolean!, $first: Int!, $after: String) {{
  notifications(unreadOnly: $unread, first: $first, after: $after) {{
    totalCount unreadCount pageInfo {{ hasNextPage endCursor }}
    edges {{ cursor node {{ {NOTIFICATION_FIELDS} }} }} }} }}"""
MARK_READ = "mutation($ids: [ID!]) { markNotificationsRead(ids: $ids) }"
EVENTS = f"""subscription {{ notificationEvents {{
  unreadCount notification {{ {NOTIFICATION_FIELDS} }} }} }}"""
PREFERENCES = """mutation($input: NotificationPreferencesInput!) {
  updateNotificationPreferences(input: $input) { dailyLimit settings { type enabled } } }"""


def failing_graph(name: str = "always fails") -> dict[str, Any]:
    """input 'text' -> JsonParse (fails on text that is not JSON) -> output."""
    return {
        "name": name,
        "nodes": [
            node("in", "AgentInput", name="text", type="string"),
            node("parse", "JsonParse"),
            node("out", "AgentOutput", name="parsed"),
        ],
        "links": [
            link("in", "result", "parse", "text"),
            link("parse", "result", "out", "value"),
        ],
    }


async def notifications_of(gql, user, *, unread: bool = False, first: int = 100) -> list[dict]:
    data = await gql.ok(LIST, {"unread": unread, "first": first}, token=user.token)
    return [edge["node"] for edge in data["notifications"]["edges"]]


async def wait_for_notifications(gql, user, count: int, timeout: float = 30.0, **match):
    """The user's notifications (matching `match` on their fields) once there are `count`."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = [
            n
            for n in await notifications_of(gql, user)
            if all(n.get(k) == v for k, v in match.items())
        ]
        if len(found) >= count:
            return found
        assert asyncio.get_running_loop().time() < deadline, (count, found)
        await asyncio.sleep(0.1)


async def set_preferences(gql, user, **changes) -> dict:
    """set_preferences(gql, user, BLOCK_EXECUTION_FAILED=False, dailyLimit=10)"""
    limit = changes.pop("dailyLimit", None)
    settings = [{"type": kind, "enabled": on} for kind, on in changes.items()]
    data = await gql.ok(
        PREFERENCES, {"input": {"settings": settings, "dailyLimit": limit}}, token=user.token
    )
    return data["updateNotificationPreferences"]


class Queue:
    """The arq queue of one stack, seen from the test: to wait for a job's end (a
    run's job ends after its end was notified) or to run a periodic job now."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.redis = create_redis(settings)
        self.name = arq_queue_name(settings)
        # Notification mail has its own queue (workers/mail_lane.py).
        self.mail = arq_mail_queue_name(settings)

    async def aclose(self) -> None:
        await self.redis.aclose()

    async def wait_run_done(self, execution_id: str, timeout: float = 30.0) -> None:
        """A run's job ends after its end was notified."""
        await self.wait_done(run_job_id(self.settings, execution_id), timeout)

    async def wait_done(self, job_id: str, timeout: float = 30.0) -> None:
        job = Job(job_id, self.redis, _queue_name=self.name)
        deadline = asyncio.get_running_loop().time() + timeout
        while await job.status() != JobStatus.complete:
            assert asyncio.get_running_loop().time() < deadline, f"job {job_id} did not finish"
            await asyncio.sleep(0.05)

    async def run(self, function: str, *args: Any, timeout: float = 60.0) -> Any:
        """Enqueue `function` (as its cron would) and wait for its result."""
        job = await self.redis.enqueue_job(function, *args, _queue_name=self.name)
        assert job is not None
        return await job.result(timeout=timeout, poll_delay=0.05)

    async def deferred_until(self, job_id: str) -> float | None:
        """When a queued mail job is due (epoch ms), None when it is not queued."""
        return await self.redis.zscore(self.mail, job_id)

    async def make_due(self, job_id: str) -> None:
        """What the clock does at a deferred mail job's time."""
        await self.redis.zadd(self.mail, {job_id: int(time.time() * 1000)}, xx=True)
