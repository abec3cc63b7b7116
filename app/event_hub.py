"""The process's one Redis reader for every live subscriber (EventHub), and what
each subscriber holds: its place in a stream and the events handed to it."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import AsyncIterator

from redis.asyncio import Redis

from app.events import Event, SubscriberTooSlow, decode_entry

log = logging.getLogger(__name__)

# Events a subscriber may fall behind before the hub ends it (SubscriberTooSlow).
MAX_PENDING = 10_000


class _Subscription:
    """One subscriber's place in a stream and the events handed to it but not yet
    read. Not an asyncio.Queue: a thousand subscribers each held one (four
    deques, ~3 KiB) although nearly all of them are empty nearly always; here an
    idle subscriber holds no buffer and no future, only while it waits."""

    __slots__ = ("_waiter", "key", "last_id", "overflowed", "pending", "position")

    def __init__(self, key: str, last_id: str) -> None:
        self.key = key
        self.last_id = last_id
        self.position = _id_order(last_id)
        self.pending: collections.deque[Event] | None = None
        # Set when the subscriber fell MAX_PENDING events behind; it is then ended.
        self.overflowed = False
        self._waiter: asyncio.Future | None = None

    def put(self, entry_id: str, position: tuple[int, int], event: Event) -> None:
        self.last_id, self.position = entry_id, position
        if self.overflowed:
            return  # ended: it reads what it has, then SubscriberTooSlow
        if self.pending is None:
            self.pending = collections.deque()
        elif len(self.pending) >= MAX_PENDING:
            self.overflowed = True
            return
        self.pending.append(event)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def next(self) -> Event:
        """The next event handed to this subscriber, waiting for it if need be.
        Raises SubscriberTooSlow once it has read all it got before it overflowed."""
        while not self.pending:
            if self.overflowed:
                raise SubscriberTooSlow
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        event = self.pending.popleft()
        if not self.pending:
            self.pending = None
        return event


class EventHub:
    """One Redis reader per API process for all of its subscribers.

    It blocks in one XREAD over every stream that has a subscriber and hands
    each entry to that stream's subscribers. A new subscription interrupts the
    blocking read (CLIENT UNBLOCK) so it is included at once.
    """

    def __init__(self, redis_url: str) -> None:
        self._redis = Redis.from_url(redis_url)
        self._control = Redis.from_url(redis_url)
        self._subscriptions: dict[str, set[_Subscription]] = {}
        self._task: asyncio.Task | None = None
        self._client_id: int | None = None
        self._blocked = False
        self._changed = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="event-hub")

    async def aclose(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._redis.aclose()
        await self._control.aclose()

    @property
    def subscriber_count(self) -> int:
        return sum(len(subs) for subs in self._subscriptions.values())

    @contextlib.asynccontextmanager
    async def subscribe(self, key: str, last_id: str | None) -> AsyncIterator[_Subscription]:
        """Entries of stream `key` after `last_id` (None: only new ones), as
        (entry id, Event) on the subscription's queue, until the context ends."""
        if last_id is None:
            last_id = await self._newest_id(key)
        subscription = _Subscription(key=key, last_id=last_id)
        self._subscriptions.setdefault(key, set()).add(subscription)
        self._changed.set()
        await self._wake()
        try:
            yield subscription
        finally:
            subscribers = self._subscriptions.get(key)
            if subscribers is not None:
                subscribers.discard(subscription)
                if not subscribers:
                    del self._subscriptions[key]

    async def _newest_id(self, key: str) -> str:
        # Its own frame: the newest entry read here is not kept alive by the
        # subscription's (an event's JSON for every open subscriber).
        newest = await self._control.xrevrange(key, "+", "-", count=1)
        return newest[0][0].decode() if newest else "0-0"

    async def _wake(self) -> None:
        if self._blocked and self._client_id is not None:
            with contextlib.suppress(Exception):
                await self._control.client_unblock(self._client_id)

    async def _run(self) -> None:
        while True:
            try:
                self._client_id = await self._redis.client_id()
                await self._loop()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("event hub: Redis read failed; retrying")
                await asyncio.sleep(0.5)

    async def _loop(self) -> None:
        while True:
            if not self._subscriptions:
                self._changed.clear()
                await self._changed.wait()
                continue
            streams = {}
            for key, subscribers in self._subscriptions.items():
                streams[key] = min(subscribers, key=_by_position).last_id
            self._blocked = True
            try:
                result = await self._redis.xread(streams, block=5000, count=500)
            finally:
                self._blocked = False
            for key_bytes, entries in result or []:
                key = key_bytes.decode()
                read_from = _id_order(streams[key])
                for entry_id_bytes, fields in entries:
                    entry_id = entry_id_bytes.decode()
                    event = decode_entry(fields)
                    entry_position = _id_order(entry_id)
                    for subscription in list(self._subscriptions.get(key, ())):
                        # A subscription that joined while this read was under way
                        # may start before `read_from`: the entries in between were
                        # not read, so it waits for the next read, which starts at
                        # its own position. Handing it a later entry now would skip them.
                        if read_from <= subscription.position < entry_position:
                            was_overflowed = subscription.overflowed
                            subscription.put(entry_id, entry_position, event)
                            if subscription.overflowed and not was_overflowed:
                                log.warning("subscriber of %s is too slow; ending it", key)


def _id_order(entry_id: str) -> tuple[int, int]:
    ms, _, sequence = entry_id.partition("-")
    return (int(ms), int(sequence or 0))


def _by_position(subscription: _Subscription) -> tuple[int, int]:
    return subscription.position
