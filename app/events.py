"""Execution events: a per-execution seq, a Redis stream per execution, and the
fan-out that lets every API process serve subscribers from any worker.

Publishing allocates the next seq and appends the event in one Lua call, so
seqs are 1, 2, 3, … with no gap even when node tasks publish concurrently. The
stream entry id is "<seq>-1", so reading "everything after seq k" is an XRANGE
from "<k+1>-0". Status events of an execution also go to its graph's stream
(for graphExecutionEvents). Streams expire an hour after the terminal event.

Writers change the database first and publish after, so anything an event says
is already readable; a subscriber's snapshot may therefore be newer than some
events that follow it, never older.

`EventReader.follow` is the one ordered feed every subscription reads
(SEMANTICS.md §7): the stored events after a seq, page by page, then the live
ones from the hub, which is told to start exactly where the stored part ends;
so seq strictly increases with nothing missing, and the feed ends right after
the execution's terminal status event.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
from redis.asyncio import Redis

from app.models import TERMINAL_STATUSES

log = logging.getLogger(__name__)

# Kept this long after the terminal event; long enough for any client to resume.
STREAM_RETENTION_SECONDS = 3600
# A stream of a run that never ends (a lost worker) still goes away eventually.
STREAM_MAX_IDLE_SECONDS = 7 * 24 * 3600
GRAPH_STREAM_MAXLEN = 1000
# Stored events read per round trip when a subscriber catches up.
REPLAY_PAGE = 500
USER_STREAM_MAXLEN = 1000
USER_STREAM_RETENTION_SECONDS = 24 * 3600

# A stream ends with its run's terminal event: once one was written (KEYS[4] marks
# it), a later non-terminal event is dropped. One can only come from another
# process, late: an approval committed before a stop but announced after it.
_PUBLISH = """
if ARGV[3] ~= '1' and redis.call('EXISTS', KEYS[4]) == 1 then
  return tonumber(redis.call('GET', KEYS[1]) or '0')
end
local seq = redis.call('INCR', KEYS[1])
redis.call('XADD', KEYS[2], seq .. '-1', 'seq', seq, 'data', ARGV[1])
if KEYS[3] ~= '' then
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*', 'seq', seq, 'data', ARGV[1])
end
local ttl = tonumber(ARGV[2])
if ARGV[3] == '1' then
  ttl = tonumber(ARGV[5])
  redis.call('SET', KEYS[4], '1', 'EX', ttl)
end
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('EXPIRE', KEYS[2], ttl)
return seq
"""


# Many events of one execution in one call (node events: never terminal, never on
# the graph's stream): seqs first..last, allocated at once, so a batch is gapless.
_PUBLISH_MANY = """
if redis.call('EXISTS', KEYS[3]) == 1 then
  return tonumber(redis.call('GET', KEYS[1]) or '0')
end
local n = #ARGV - 1
local last = redis.call('INCRBY', KEYS[1], n)
for i = 1, n do
  local seq = last - n + i
  redis.call('XADD', KEYS[2], seq .. '-1', 'seq', seq, 'data', ARGV[i + 1])
end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1]))
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[1]))
return last
"""
# Events per script call: a call blocks Redis while it runs.
PUBLISH_BATCH = 500


class EventKeys:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def seq(self, execution_id: uuid.UUID | str) -> str:
        return f"{self.prefix}exec:{execution_id}:seq"

    def stream(self, execution_id: uuid.UUID | str) -> str:
        return f"{self.prefix}exec:{execution_id}:events"

    def ended(self, execution_id: uuid.UUID | str) -> str:
        """Set once the execution's terminal event is on its stream."""
        return f"{self.prefix}exec:{execution_id}:ended"

    def graph_stream(self, graph_id: uuid.UUID | str) -> str:
        return f"{self.prefix}graph:{graph_id}:events"

    def user_stream(self, user_id: uuid.UUID | str) -> str:
        """One user's notification events (notificationEvents)."""
        return f"{self.prefix}user:{user_id}:notifications"


@dataclass(frozen=True)
class Event:
    seq: int
    # "execution" (a status event carrying an execution snapshot) or "node"
    kind: str
    data: dict[str, Any]
    # What subscribers made of it, by how they see it: the hub hands one Event
    # to all of a stream's subscribers, so its GraphQL object is built once for
    # all of them (and schema/executor.py shares their results).
    shaped: dict[Any, Any] = field(default_factory=dict, compare=False, repr=False)

    def shape(self, view: Any, build: Callable[[], Any]) -> Any:
        """`build()` once per `view` (what decides what a subscriber sees of it)."""
        shaped = self.shaped.get(view)
        if shaped is None:
            shaped = self.shaped[view] = build()
        return shaped

    def ends(self, execution_id: uuid.UUID | str) -> bool:
        """Whether this is the terminal status event of `execution_id`, which ends its feed."""
        if self.kind != "execution":
            return False
        snapshot = self.data["execution"]
        return snapshot["id"] == str(execution_id) and snapshot["status"] in _TERMINAL


_TERMINAL = frozenset(str(status) for status in TERMINAL_STATUSES)


@dataclass(frozen=True)
class StreamPosition:
    """Where an execution's stream stands: its newest seq (0: nothing stored,
    or expired) and whether that newest event is the terminal one."""

    seq: int
    ended: bool


class SubscriberTooSlow(Exception):
    """The hub dropped this subscriber after it fell 10,000 events behind."""


def decode_entry(fields: dict[bytes, bytes]) -> Event:
    body = orjson.loads(fields[b"data"])
    return Event(seq=int(fields[b"seq"]), kind=body["kind"], data=body)


class Hub(Protocol):
    """What `EventReader.follow` needs of the process's hub (app/event_hub.py)."""

    def subscribe(self, key: str, last_id: str | None) -> AbstractAsyncContextManager[Any]: ...


class EventPublisher:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis = redis
        self.keys = EventKeys(prefix)
        self._script = redis.register_script(_PUBLISH)

    async def publish(
        self,
        execution_id: uuid.UUID,
        body: dict[str, Any],
        *,
        graph_id: uuid.UUID | None = None,
        terminal: bool = False,
    ) -> int:
        """Append one event; returns its seq. `graph_id` also puts it on the graph's stream."""
        keys, args = self._publish_call(
            execution_id, orjson.dumps(body, default=str), graph_id, terminal
        )
        return int(await self._script(keys=keys, args=args))

    async def publish_on(
        self,
        pipeline: Any,
        execution_id: uuid.UUID,
        body: bytes,
        *,
        graph_id: uuid.UUID | None = None,
        terminal: bool = False,
    ) -> None:
        """publish(), queued on `pipeline` (a Redis pipeline the caller executes),
        `body` already JSON: many runs ending together in one round trip. EVAL
        with the script's text, as publish_many does (no SCRIPT EXISTS first)."""
        keys, args = self._publish_call(execution_id, body, graph_id, terminal)
        pipeline.eval(_PUBLISH, len(keys), *keys, *args)

    def _publish_call(
        self, execution_id: uuid.UUID, body: bytes, graph_id: uuid.UUID | None, terminal: bool
    ) -> tuple[list[str], list[Any]]:
        keys = [
            self.keys.seq(execution_id),
            self.keys.stream(execution_id),
            self.keys.graph_stream(graph_id) if graph_id else "",
            self.keys.ended(execution_id),
        ]
        args = [
            body,
            STREAM_MAX_IDLE_SECONDS,
            "1" if terminal else "0",
            GRAPH_STREAM_MAXLEN,
            STREAM_RETENTION_SECONDS,
        ]
        return keys, args

    async def publish_many(
        self, pipeline: Any, execution_id: uuid.UUID, bodies: list[bytes]
    ) -> None:
        """Queue non-terminal events (bodies already JSON) on `pipeline`, a Redis
        pipeline the caller executes: one round trip for any number of events.
        EVAL with the script's text, not a registered script: redis-py sends
        SCRIPT EXISTS ahead of every pipeline holding one, a second round trip
        per step; Redis keeps the compiled script by its hash either way."""
        keys = (
            self.keys.seq(execution_id),
            self.keys.stream(execution_id),
            self.keys.ended(execution_id),
        )
        for start in range(0, len(bodies), PUBLISH_BATCH):
            pipeline.eval(
                _PUBLISH_MANY,
                3,
                *keys,
                STREAM_MAX_IDLE_SECONDS,
                *bodies[start : start + PUBLISH_BATCH],
            )

    async def publish_to_user(self, user_id: uuid.UUID, body: dict[str, Any]) -> None:
        """Append an event to the user's own stream (served by the same EventHub).
        No seq: a client that reconnects reads the list it missed instead."""
        key = self.keys.user_stream(user_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xadd(
                key,
                {"seq": 0, "data": orjson.dumps(body, default=str)},
                maxlen=USER_STREAM_MAXLEN,
                approximate=True,
            )
            pipe.expire(key, USER_STREAM_RETENTION_SECONDS)
            await pipe.execute()


class EventReader:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis = redis
        self.keys = EventKeys(prefix)

    async def current_seq(self, execution_id: uuid.UUID) -> int:
        value = await self.redis.get(self.keys.seq(execution_id))
        return int(value) if value else 0

    async def after(
        self,
        execution_id: uuid.UUID,
        seq: int,
        upto: int | None = None,
        count: int | None = None,
    ) -> list[Event]:
        """Stored events with seq > `seq` (and ≤ `upto`), in order; at most `count`."""
        end = f"{upto}-1" if upto is not None else "+"
        entries = await self.redis.xrange(
            self.keys.stream(execution_id), f"{seq + 1}-0", end, count=count
        )
        return [decode_entry(fields) for _, fields in entries]

    async def position(self, execution_id: uuid.UUID) -> StreamPosition:
        """The newest seq and whether its event ended the execution, read together."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.get(self.keys.seq(execution_id))
            pipe.xrevrange(self.keys.stream(execution_id), "+", "-", count=1)
            seq, newest = await pipe.execute()
        ended = bool(newest) and decode_entry(newest[0][1]).ends(execution_id)
        return StreamPosition(seq=int(seq) if seq else 0, ended=ended)

    async def unended(self, execution_ids: list[uuid.UUID]) -> list[uuid.UUID]:
        """Those of these (ended) executions whose stream holds events but not, as
        its newest, their end: a worker died between writing an end and announcing it."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for execution_id in execution_ids:
                pipe.xrevrange(self.keys.stream(execution_id), "+", "-", count=1)
            newest = await pipe.execute()
        return [
            execution_id
            for execution_id, entries in zip(execution_ids, newest, strict=True)
            if entries and not decode_entry(entries[0][1]).ends(execution_id)
        ]

    async def follow(
        self, hub: Hub, execution_id: uuid.UUID, after: int, position: StreamPosition
    ) -> AsyncIterator[Event]:
        """Every event with seq > `after`: the stored ones up to `position.seq`,
        then live ones; ends right after the terminal status event. Raises
        SubscriberTooSlow if the subscriber stops reading for too long."""
        if position.ended and after >= position.seq:
            return
        live = (
            contextlib.nullcontext(None)
            if position.ended
            # The hub starts exactly after the stored part, whenever it reads.
            else hub.subscribe(self.keys.stream(execution_id), f"{position.seq}-1")
        )
        async with live as subscription:
            seq = after
            while seq < position.seq:
                page = await self.after(execution_id, seq, upto=position.seq, count=REPLAY_PAGE)
                if not page:
                    break  # expired meanwhile
                for event in page:
                    yield event
                    if event.ends(execution_id):
                        return
                seq = page[-1].seq
            if subscription is None:
                return
            while True:
                event = await subscription.next()
                yield event
                if event.ends(execution_id):
                    return
