"""Workers that start a job as soon as it is enqueued, not at their next poll.

arq 0.28 only polls its queue (`poll_delay`): a job enqueued just after a poll
waited the whole interval, which was most of executeGraph -> first event. Every
enqueue through app/clients/redis.py's client publishes a wake-up on the
queue's channel; a `WakeableWorker` listens on it and polls at once. The timed
poll stays (WORKER_POLL_SECONDS) for what no wake-up announces: deferred jobs
and retries, jobs whose lease lapsed, and wake-ups lost while Redis was away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from arq.connections import create_pool, log_redis_info
from arq.worker import Worker

from app.clients.redis import WakingArqRedis, worker_wakeup_channel

log = logging.getLogger(__name__)

# After the wake-up subscription fails (Redis away), try again this much later;
# the timed poll goes on meanwhile.
RESUBSCRIBE_SECONDS = 1.0


class WakeableWorker(Worker):
    """arq's Worker whose wait between queue polls also ends on a wake-up.
    Burst mode is not supported (no worker here runs in it)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.woken = asyncio.Event()

    async def main(self) -> None:
        # arq 0.28's Worker.main, with `async for _ in poll(...)` replaced by a
        # wait that a wake-up ends early.
        if self._pool is None:
            connected = await create_pool(self.redis_settings)
            # Its own enqueues (schedules firing, mail, top-ups) wake workers too.
            self._pool = WakingArqRedis(
                connection_pool=connected.connection_pool,
                job_deserializer=self.job_deserializer,
                job_serializer=self.job_serializer,
                default_queue_name=self.queue_name,
                expires_extra_ms=self.expires_extra_ms,
            )
        names = ", ".join(self.functions)
        log.info("Starting worker for %d functions: %s", len(self.functions), names)
        await log_redis_info(self.pool, log.info)
        self.ctx["redis"] = self.pool
        if self.on_startup:
            await self.on_startup(self.ctx)
        listener = asyncio.create_task(self._listen(), name=f"wake-up {self.queue_name}")
        try:
            while True:
                # Cleared before the poll: a wake-up during it means poll again.
                self.woken.clear()
                await self._poll_iteration()
                # asyncio.timeout, not wait_for: Python 3.11's wait_for swallows a
                # cancellation that lands as the wait ends (a wake-up just as the
                # worker stops), and the worker then never stopped.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.poll_delay_s):
                        await self.woken.wait()
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener

    async def close(self) -> None:
        # arq 0.28's Worker.close, gathering its job tasks with return_exceptions: a
        # job the shutdown cancelled before its first step re-raised CancelledError
        # there, so the worker exited 1 without its on_shutdown (lanes never stopped).
        if not self._handle_signals:
            self.handle_sig(signal.SIGUSR1)
        if not self._pool:
            return
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        await self.pool.delete(self.health_check_key)
        if self.on_shutdown:
            await self.on_shutdown(self.ctx)
        await self.pool.close(close_connection_pool=True)
        self._pool = None

    async def _listen(self) -> None:
        channel = worker_wakeup_channel(self.queue_name)
        while True:
            try:
                async with self.pool.pubsub() as pubsub:
                    await pubsub.subscribe(channel)
                    log.info("listening for wake-ups on %s", channel)
                    # Jobs enqueued while not subscribed announced themselves to no one.
                    self.woken.set()
                    async for message in pubsub.listen():
                        if message["type"] == "message":
                            self.woken.set()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("worker wake-ups unavailable; polling only", exc_info=True)
            await asyncio.sleep(RESUBSCRIBE_SECONDS)
