"""Database transactions that a cancelled task cannot leave open.

Tortoise's `in_transaction()` acquires a pooled connection and sends BEGIN in
its `__aenter__`; a task cancelled right there (a stopped run's node task) never
reaches `__aexit__`, so the connection stays "idle in transaction" and out of
the pool for good. `atomic` runs the transaction in a task of its own behind
`asyncio.shield`: a cancelled caller waits for it to commit or roll back (and
give its connection back), then sees the cancellation.

On SQLite (`make dev`: the API and a worker share one file) a transaction that
read and then writes fails at once with "database is locked" when another
process wrote meanwhile (WAL cannot upgrade a stale read snapshot, so the busy
timeout does not apply): the whole unit is rolled back and run again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from tortoise.exceptions import OperationalError
from tortoise.transactions import in_transaction

T = TypeVar("T")

# SQLite's "database is locked": tries of a unit, first pause (doubled each time).
LOCKED_TRIES = 12
LOCKED_FIRST_PAUSE_SECONDS = 0.01


def _locked(exc: Exception) -> bool:
    return "database is locked" in str(exc)


async def atomic(work: Callable[[Any], Awaitable[T]]) -> T:
    """`await work(conn)` inside one transaction (commit on return, roll back on error)."""

    async def unit() -> T:
        pause = LOCKED_FIRST_PAUSE_SECONDS
        for _ in range(LOCKED_TRIES - 1):
            try:
                async with in_transaction() as conn:
                    return await work(conn)
            except OperationalError as exc:
                if not _locked(exc):
                    raise
            await asyncio.sleep(pause)
            pause = min(pause * 2, 1.0)
        async with in_transaction() as conn:
            return await work(conn)

    return await finish_even_if_cancelled(unit())


async def finish_even_if_cancelled(awaitable: Awaitable[T]) -> T:
    """Awaits `awaitable` to its end even when the caller is cancelled meanwhile;
    the caller's cancellation is raised once it has ended."""
    task = asyncio.ensure_future(awaitable)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        # Let it end (and so return its connection) before the cancellation goes on.
        await asyncio.wait([task])
        if not task.cancelled():
            task.exception()  # retrieved, so it is never reported as unhandled
        raise
