"""An execution's event stream ends with its terminal event (app/events.py): a
non-terminal event published after it, late from another process (an approval
committed before a stop, announced after it), is dropped, never appended."""

from __future__ import annotations

import uuid

from app.clients.redis import create_redis
from app.events import EventPublisher, EventReader
from app.settings import get_settings
from tests.conftest import TEST_ENV


async def test_nothing_follows_an_executions_terminal_event(database):
    settings = get_settings()
    prefix = f"{TEST_ENV['REDIS_PREFIX']}stream-end-{uuid.uuid4().hex[:8]}:"
    redis = create_redis(settings)
    publisher, reader = EventPublisher(redis, prefix), EventReader(redis, prefix)
    execution_id, graph_id = uuid.uuid4(), uuid.uuid4()
    try:
        running = {"kind": "execution", "execution": {"id": str(execution_id), "status": "RUNNING"}}
        ended = {
            "kind": "execution",
            "execution": {"id": str(execution_id), "status": "TERMINATED"},
        }
        late = {"kind": "review", "review": {"id": "r", "status": "APPROVED"}}
        assert await publisher.publish(execution_id, running, graph_id=graph_id) == 1
        async with redis.pipeline(transaction=False) as pipe:
            await publisher.publish_many(pipe, execution_id, [b'{"kind": "node", "n": 1}'])
            await pipe.execute()
        assert await publisher.publish(execution_id, ended, graph_id=graph_id, terminal=True) == 3
        # Late: dropped, the seq stays that of the end.
        assert await publisher.publish(execution_id, late) == 3
        async with redis.pipeline(transaction=False) as pipe:
            await publisher.publish_many(pipe, execution_id, [b'{"kind": "node", "n": 2}'])
            await pipe.execute()
        events = await reader.after(execution_id, 0)
        assert [(e.seq, e.kind) for e in events] == [
            (1, "execution"),
            (2, "node"),
            (3, "execution"),
        ]
        # An end announced again (a retried stop) still goes on: it is the end.
        assert await publisher.publish(execution_id, ended, graph_id=graph_id, terminal=True) == 4
        assert [e.seq for e in await reader.after(execution_id, 3)] == [4]
    finally:
        keys = [key async for key in redis.scan_iter(match=f"{prefix}*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()
