"""Job leases: a job is "in progress" only while its worker is alive.

arq marks a job in progress with a key whose lifetime is the longest job
timeout (a day, for graph runs), so a job whose worker was SIGKILLed would wait
a day before another worker may take it. Here every worker starts jobs with a
LEASE_SECONDS lifetime on that key (`shorten_in_progress`) and every job renews
it while it runs (`leased`), from its first line: a dead worker's jobs lapse
within LEASE_SECONDS and run again elsewhere.

The renewal SETs the key rather than PEXPIRE it: PEXPIRE on a key that has
already lapsed (a worker stalled past LEASE_SECONDS, or another worker's end of
the same job deleted it) does nothing, and the lease would silently end. A
lapsed lease is no longer a correctness problem for graph runs (only the runner
holding the execution's lock runs it, workers/engine/ownership.py), only wasted
work for the worker that picks the job up and waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from arq.constants import in_progress_key_prefix
from arq.worker import Worker

LEASE_SECONDS = 10
LEASE_RENEW_SECONDS = 3

T = TypeVar("T")


def shorten_in_progress(worker: Worker) -> Worker:
    worker.in_progress_timeout_s = LEASE_SECONDS
    return worker


async def _hold(redis: Any, job_id: str) -> None:
    key = in_progress_key_prefix + job_id
    while True:
        await redis.set(key, b"1", px=LEASE_SECONDS * 1000)
        await asyncio.sleep(LEASE_RENEW_SECONDS)


def leased(job: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """Renew the running job's lease until it returns (or is cancelled)."""

    @functools.wraps(job)
    async def run(ctx: dict[str, Any], *args: Any, **kwargs: Any) -> T:
        lease = asyncio.create_task(_hold(ctx["redis"], ctx["job_id"]))
        try:
            return await job(ctx, *args, **kwargs)
        finally:
            lease.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await lease

    return run
