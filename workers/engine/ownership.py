"""Exactly one runner per execution (SEMANTICS.md §7), even when a worker stalls.

arq's in-progress key is a lease in Redis: a worker whose event loop stalls
cannot renew it, the key lapses and another worker starts the same job. So the
job is not what grants the right to run. On PostgreSQL each worker keeps one
dedicated connection holding a session advisory lock per execution it runs: the
lock cannot lapse while that connection lives (a stalled process's kernel keeps
it open), and the server drops it the moment the process dies. A second worker
given the same job waits for the lock instead of running it.

Each runner that gets the lock also bumps the execution's `runner_epoch` and
every write it makes checks that number in the same statement (a fence): a
runner whose lock connection broke while it was stalled finds, at its next
write, that someone else took over (LostOwnership) and stops without writing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

# How often a worker waiting for another runner's lock asks again.
WAIT_POLL_SECONDS = 1.0
# How often the lock connection is checked; a broken one ends every run it guarded.
HEARTBEAT_SECONDS = 5.0
# The server gives up on a holder whose machine vanished after about
# idle + interval * count seconds (a stalled process still answers keepalives).
_KEEPALIVES = {
    "tcp_keepalives_idle": "10",
    "tcp_keepalives_interval": "5",
    "tcp_keepalives_count": "3",
    "application_name": "agentgraph-runner-locks",
}


class LostOwnership(Exception):
    """Another runner took this execution over; this one must stop writing."""


@dataclass(eq=False)
class Fence:
    """What every write of a runner carries: the root execution it runs and the
    epoch it was given. `lost` is set when its lock is gone."""

    root_id: uuid.UUID
    epoch: int
    lost: asyncio.Event = field(default_factory=asyncio.Event)


def lock_key(execution_id: uuid.UUID) -> int:
    """The advisory lock's bigint key for an execution."""
    return int.from_bytes(execution_id.bytes[:8], "big", signed=True)


class RunnerLocks:
    """Locks held in this process only (SQLite, where one worker runs everything)."""

    def __init__(self) -> None:
        # Also on PostgreSQL: a session lock is re-entrant, so this process must not
        # take an execution twice (its own lapsed job picked up again).
        self._held: dict[uuid.UUID, Fence] = {}

    async def _try_lock(self, execution_id: uuid.UUID) -> bool:
        return True

    async def _unlock(self, execution_id: uuid.UUID) -> None:
        return None

    async def close(self) -> None:
        return None

    @contextlib.asynccontextmanager
    async def hold(self, execution_id: uuid.UUID, claim: Any) -> AsyncIterator[Fence | None]:
        """Waits until this process may run the execution, takes it over with
        `claim(execution_id) -> epoch | None` and yields its fence (None: no
        such execution). The lock goes when the block ends."""
        waited = False
        while execution_id in self._held or not await self._try_lock(execution_id):
            if not waited:
                log.warning("execution %s is held by another runner; waiting", execution_id)
                waited = True
            await asyncio.sleep(WAIT_POLL_SECONDS)
        fence = None
        try:
            epoch = await claim(execution_id)
            if epoch is not None:
                fence = Fence(execution_id, epoch)
                self._held[execution_id] = fence
            yield fence
        finally:
            self._held.pop(execution_id, None)
            await asyncio.shield(self._unlock(execution_id))


class PostgresRunnerLocks(RunnerLocks):
    def __init__(self, credentials: dict[str, Any]) -> None:
        super().__init__()
        self._params = {
            key: credentials[key]
            for key in ("host", "port", "user", "password", "database")
            if credentials.get(key) is not None
        }
        self._connection: Any = None
        self._io = asyncio.Lock()
        self._heartbeat: asyncio.Task | None = None

    async def _conn(self) -> Any:
        import asyncpg

        if self._connection is None or self._connection.is_closed():
            self._connection = await asyncpg.connect(**self._params, server_settings=_KEEPALIVES)
            self._connection.add_termination_listener(lambda _: self._lose_all())
            if self._heartbeat is None or self._heartbeat.done():
                self._heartbeat = asyncio.create_task(self._beat(), name="runner-locks")
        return self._connection

    async def _try_lock(self, execution_id: uuid.UUID) -> bool:
        async with self._io:
            conn = await self._conn()
            return bool(
                await conn.fetchval("SELECT pg_try_advisory_lock($1)", lock_key(execution_id))
            )

    async def _unlock(self, execution_id: uuid.UUID) -> None:
        async with self._io:
            if self._connection is None or self._connection.is_closed():
                return  # gone with its connection
            try:
                await self._connection.execute(
                    "SELECT pg_advisory_unlock($1)", lock_key(execution_id)
                )
            except Exception:
                log.warning("could not release the lock of %s", execution_id, exc_info=True)
                self._lose_all()

    async def _beat(self) -> None:
        while self._connection is not None:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            try:
                async with self._io:
                    if self._connection is None or self._connection.is_closed():
                        break
                    async with asyncio.timeout(HEARTBEAT_SECONDS):  # not wait_for (wakeup.py)
                        await self._connection.fetchval("SELECT 1")
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("runner lock connection failed", exc_info=True)
                break
        self._lose_all()

    def _lose_all(self) -> None:
        """The connection is gone and with it every lock: each run it guarded stops."""
        if self._held:
            log.warning("lost the runner locks of %d execution(s)", len(self._held))
        for fence in self._held.values():
            fence.lost.set()
        self._held.clear()
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed():
            connection.terminate()

    async def close(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
        if self._connection is not None and not self._connection.is_closed():
            await self._connection.close()
        self._connection = None
