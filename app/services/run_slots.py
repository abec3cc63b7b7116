"""Fair concurrency (issue 15): at most MAX_RUNNING_EXECUTIONS_PER_USER top-level
runs of one user hold a slot at a time, across every worker, and slots go
round-robin between users.

A run holds a slot while it is RUNNING, or QUEUED or REVIEW with `admitted_at`
set (a worker admitted it and is starting or resuming it). A run that pauses for
human review gives its slot back (its `admitted_at` is cleared); once decided,
it waits for a slot like a queued run before it resumes, or a user at the cap
would run one more than the cap. The count lives in the database and an
admission is decided in one transaction: on PostgreSQL under a transaction-level
advisory lock, so two workers never both admit past a user's cap; on SQLite
(`make dev`, one worker) under a lock of this process.

Every top-level run has a job on its deployment's run queue (as before: the job
is what makes a run crash-safe). A job whose run is QUEUED and not admitted asks
`admit`: the run starts only when its user is under the cap and no other user
is owed a slot first (fewest runs holding a slot, then oldest waiting run).
Otherwise the job ends at once ("waiting") and holds no worker. Whenever a slot
may be free (a job decided, a run ended or was stopped, a run was submitted) the
next fair run's job is put at the front of the run queue (`promote`), so a free
worker slot takes it next, not the backlog of whoever queued most.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from arq import ArqRedis
from arq.constants import job_key_prefix, result_key_prefix
from tortoise import connections
from tortoise.expressions import Q
from tortoise.functions import Count

from app.clients.redis import arq_job_id, arq_run_queue_name, wake_workers
from app.clock import utcnow
from app.models import Execution, ExecutionStatus
from app.settings import Settings
from app.transactions import atomic

log = logging.getLogger(__name__)

RUN_EXECUTION_JOB = "run_execution"
# The advisory lock every admission takes (PostgreSQL, transaction-scoped).
ADMISSION_LOCK = 0x61676772756E73  # "aggruns"
# A promoted job's score in the arq queue: this far before now, ahead of any job
# enqueued in the last day, behind runs promoted earlier.
FRONT_MS = 86_400_000
_sqlite_admissions = asyncio.Lock()

# Runs holding a slot per user, and each user's waiting runs numbered oldest first
# (QUEUED ones, and REVIEW ones with a decision to resume with: waiting for review
# gave their slot back, so resuming takes one again);
# the waiting runs that fit under their user's cap, ordered by (slots their user
# would then hold, age): round-robin between users, oldest first within one.
_FAIREST = """
WITH RECURSIVE {users}active AS (
  SELECT user_id, COUNT(*) AS n FROM executions
  WHERE parent_execution_id IS NULL
    AND (status = 'RUNNING' OR (status IN ('QUEUED', 'REVIEW') AND admitted_at IS NOT NULL))
  GROUP BY user_id
), unadmitted AS (
  {queued}
  UNION ALL
  SELECT id, user_id, created_at FROM executions e
  WHERE status = 'REVIEW' AND admitted_at IS NULL AND parent_execution_id IS NULL
    AND run_queue = {queue} AND EXISTS (
      SELECT 1 FROM node_reviews r JOIN node_executions n ON n.id = r.id
      WHERE r.root_execution_id = e.id AND n.status = 'REVIEW'
        AND r.status IN ('APPROVED', 'REJECTED', 'EXPIRED'))
), waiting AS (
  SELECT id, user_id, created_at,
    ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY created_at, id) AS place
  FROM unadmitted
)
SELECT w.id AS id, w.user_id AS user_id, COALESCE(a.n, 0) AS active
FROM waiting w LEFT JOIN active a ON a.user_id = w.user_id
WHERE COALESCE(a.n, 0) + w.place <= {cap}
ORDER BY COALESCE(a.n, 0) + w.place, w.created_at, w.id
LIMIT {limit}
"""


# Each user's QUEUED runs not yet admitted (SQLite: `make dev`, a handful of runs).
_QUEUED_ALL = """SELECT id, user_id, created_at FROM executions
  WHERE status = 'QUEUED' AND admitted_at IS NULL AND parent_execution_id IS NULL
    AND run_queue = {queue}"""
# PostgreSQL: only the first `cap` of them per user can be owed a slot, so read just
# those, per user with queued runs (found by skipping along the run-queue index):
# numbering every queued run made each admission and each submitted run cost time
# in proportion to the whole backlog (about 0.5 s at 100,000 queued runs, taken
# under the admission lock).
_QUEUED_USERS = """queued_users AS (
  (SELECT user_id FROM executions WHERE run_queue = {queue} AND status = 'QUEUED'
   ORDER BY user_id LIMIT 1)
  UNION ALL
  SELECT (SELECT e.user_id FROM executions e WHERE e.run_queue = {queue}
    AND e.status = 'QUEUED' AND e.user_id > u.user_id ORDER BY e.user_id LIMIT 1)
  FROM queued_users u WHERE u.user_id IS NOT NULL
), """
_QUEUED_FIRST = """SELECT c.id, c.user_id, c.created_at FROM queued_users u
  CROSS JOIN LATERAL (
    SELECT id, user_id, created_at FROM executions
    WHERE run_queue = {queue} AND status = 'QUEUED' AND user_id = u.user_id
      AND admitted_at IS NULL AND parent_execution_id IS NULL
    ORDER BY created_at, id LIMIT {cap}) c"""


@dataclass(frozen=True)
class Candidate:
    execution_id: uuid.UUID
    user_id: uuid.UUID


@dataclass(frozen=True)
class Admission:
    # False: the run waits for a slot (its job ends); True: the job goes on (the
    # run was admitted now or before, is past starting, or is gone).
    go: bool
    # The run owed the slot instead (to be promoted), if any.
    next_fair: Candidate | None = None


def run_job_id(settings: Settings, execution_id: uuid.UUID | str) -> str:
    return arq_job_id(settings, "run", execution_id)


def _dialect(conn: Any) -> str:
    return conn.capabilities.dialect


async def _fairest(conn: Any, queue: str, cap: int, limit: int) -> list[Candidate]:
    if _dialect(conn) == "postgres":
        marks = {"queue": "$1", "cap": "$2", "limit": "$3"}
        sql = _FAIREST.format(
            users=_QUEUED_USERS.format(**marks), queued=_QUEUED_FIRST.format(**marks), **marks
        )
    else:
        marks = {"queue": "?1", "cap": "?2", "limit": "?3"}
        sql = _FAIREST.format(users="", queued=_QUEUED_ALL.format(**marks), **marks)
    rows = await conn.execute_query_dict(sql, [queue, cap, limit])
    return [Candidate(uuid.UUID(str(row["id"])), uuid.UUID(str(row["user_id"]))) for row in rows]


async def _locked(work: Any) -> Any:
    """`work(conn)` in one transaction that no other admission runs beside."""

    async def unit(conn: Any) -> Any:
        if _dialect(conn) == "postgres":
            await conn.execute_query("SELECT pg_advisory_xact_lock($1)", [ADMISSION_LOCK])
        return await work(conn)

    if _dialect(connections.get("default")) == "postgres":
        return await atomic(unit)
    async with _sqlite_admissions:
        return await atomic(unit)


@dataclass
class RunSlots:
    """What deciding and handing out run slots needs: the settings (cap, prefix)
    and Redis (the run queue)."""

    settings: Settings
    redis: ArqRedis

    @property
    def queue(self) -> str:
        return arq_run_queue_name(self.settings)

    @property
    def cap(self) -> int:
        return self.settings.MAX_RUNNING_EXECUTIONS_PER_USER

    async def enqueue(self, execution_id: uuid.UUID, *, front: bool = False) -> bool:
        """The run's one job (its id follows from the execution id); False when it
        was already there. `front`: ahead of the queue's backlog."""
        job_id = run_job_id(self.settings, execution_id)
        for _ in range(2):
            job = await self.redis.enqueue_job(
                RUN_EXECUTION_JOB, str(execution_id), _job_id=job_id, _queue_name=self.queue
            )
            if job is not None or not front:
                break
            if await self.redis.exists(job_key_prefix + job_id):
                break  # waiting in the queue (or running): moved below
            # Only the result of its last try is left (it found no free slot then):
            # a run owed a slot gets a job again.
            await self.redis.delete(result_key_prefix + job_id)
        if front:
            # arq takes the lowest score first; XX: never re-adds a job that ended.
            score = int(utcnow().timestamp() * 1000) - FRONT_MS
            if await self.redis.zadd(self.queue, {job_id: score}, xx=True, ch=True):
                # A job waiting out a retry's delay is due now: no enqueue woke anyone.
                await wake_workers(self.redis, self.queue)
        return job is not None

    async def admit(self, execution_id: uuid.UUID, *, resuming: bool = False) -> Admission:
        """Decides whether a QUEUED run not yet admitted (or, `resuming`, a REVIEW
        run with a decision to go on with) may start now (see the module's
        docstring); the run then holds a slot until it ends or pauses again."""
        waits_in = ExecutionStatus.REVIEW if resuming else ExecutionStatus.QUEUED

        async def work(conn: Any) -> Admission:
            row = await Execution.filter(id=execution_id).using_db(conn).first()
            if row is None or row.status != waits_in or row.admitted_at:
                return Admission(True)
            if row.parent_execution_id is not None:  # type: ignore[attr-defined]
                return Admission(True)  # a sub-graph run: its parent's job runs it
            if row.run_queue != self.queue:
                # Its job runs here (a run from before run queues, or another
                # deployment's sweep): this deployment starts it.
                await Execution.filter(id=execution_id).using_db(conn).update(run_queue=self.queue)
            fair = await _fairest(conn, self.queue, self.cap, self.cap)
            owed = fair[0] if fair else None
            # It starts when it fits under its user's cap and every run owed a slot
            # before it is its user's (they are admitted alongside, by their jobs).
            ids = [candidate.execution_id for candidate in fair]
            user_id = row.user_id  # type: ignore[attr-defined]
            if execution_id not in ids or any(
                candidate.user_id != user_id for candidate in fair[: ids.index(execution_id)]
            ):
                return Admission(False, owed)
            await (
                Execution.filter(id=execution_id, admitted_at=None)
                .using_db(conn)
                .update(admitted_at=utcnow())
            )
            return Admission(True)

        return await _locked(work)

    async def next_fair(self) -> Candidate | None:
        # A read: the admission that follows decides under the lock.
        fair = await _fairest(connections.get("default"), self.queue, self.cap, 1)
        return fair[0] if fair else None

    async def promote(self, candidate: Candidate | None = None) -> uuid.UUID | None:
        """Puts the job of the run owed the next slot (`candidate`, else the
        fairest waiting run) at the front of the run queue."""
        candidate = candidate or await self.next_fair()
        if candidate is None:
            return None
        await self.enqueue(candidate.execution_id, front=True)
        return candidate.execution_id

    async def nudge(self, candidate: Candidate | None = None) -> None:
        """`promote`, best effort: one lost to an error waits for the next (every
        run job's decision, every run's end and stop, every submitted run, and the
        sweep each minute promote)."""
        try:
            await self.promote(candidate)
        except Exception:
            log.warning("could not promote the next run", exc_info=True)

    async def requeue_stranded(self, before: datetime, since: datetime, limit: int) -> int:
        """Enqueues QUEUED top-level runs created between `since` and `before` that
        have no job and may start (admitted, or their user is under the cap);
        returns how many jobs were new. Runs without a queue are taken on here."""
        window = Execution.filter(
            status=ExecutionStatus.QUEUED,
            parent_execution_id=None,
            created_at__lt=before,
            created_at__gte=since,
        )
        await window.filter(run_queue=None).update(run_queue=self.queue)
        active = await _active_by_user()
        at_cap = [user_id for user_id, count in active.items() if count >= self.cap]
        rows = (
            await window.filter(run_queue=self.queue)
            .filter(Q(admitted_at__not_isnull=True) | ~Q(user_id__in=at_cap))
            .order_by("created_at")
            .limit(limit)
            .values_list("id", flat=True)
        )
        return sum([await self.enqueue(execution_id) for execution_id in rows])


async def _active_by_user() -> dict[uuid.UUID, int]:
    """Top-level runs holding a slot, per user."""
    rows = (
        await Execution.filter(parent_execution_id=None)
        .filter(
            Q(status=ExecutionStatus.RUNNING)
            | Q(
                status__in=[ExecutionStatus.QUEUED, ExecutionStatus.REVIEW],
                admitted_at__not_isnull=True,
            )
        )
        .annotate(active=Count("id"))
        .group_by("user_id")
        .values("user_id", "active")
    )
    return {row["user_id"]: row["active"] for row in rows}


async def queue_positions(execution_ids: list[uuid.UUID]) -> dict[uuid.UUID, int]:
    """Each QUEUED top-level run's place among its user's QUEUED top-level runs,
    oldest first (1 = the next of that user's runs to start); others are absent."""
    queued = await Execution.filter(
        id__in=execution_ids, status=ExecutionStatus.QUEUED, parent_execution_id=None
    ).values("id", "user_id", "created_at")
    spans: dict[uuid.UUID, tuple[datetime, datetime]] = {}
    for row in queued:
        user, at = row["user_id"], row["created_at"]
        oldest, newest = spans.get(user, (at, at))
        spans[user] = (min(oldest, at), max(newest, at))
    positions: dict[uuid.UUID, int] = {}
    wanted = {row["id"] for row in queued}
    for user_id, (oldest, newest) in spans.items():
        # Per user on the page (a page is nearly always one user's): the runs ahead
        # of the page are counted, only the page's span is read, so a page costs
        # little however many runs wait before it.
        theirs = Execution.filter(
            user_id=user_id, status=ExecutionStatus.QUEUED, parent_execution_id=None
        )
        before = await theirs.filter(created_at__lt=oldest).count()
        span = (
            await theirs.filter(created_at__gte=oldest, created_at__lte=newest)
            .order_by("created_at", "id")
            .values_list("id", flat=True)
        )
        for number, row_id in enumerate(span, start=before + 1):
            if row_id in wanted:
                positions[row_id] = number
    return positions
