"""A run's node events: each goes to its execution's stream and to every
ancestor's (a sub-graph run's nodes roll up to the runs above it), all of one
step in one Redis round trip together with the step's counters."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable

from app.models import ExecutionStatus
from workers.engine.context import EngineContext
from workers.engine.rows import NodeRow, node_event
from workers.engine.store import EndedRow


class Announcer:
    def __init__(
        self, engine: EngineContext, execution_id: uuid.UUID, ancestors: tuple[uuid.UUID, ...]
    ) -> None:
        self.engine = engine
        self.execution_id = execution_id
        self.streams = (execution_id, *ancestors)

    async def rows(self, rows: Iterable[NodeRow], ended: NodeRow | None = None) -> None:
        """Events for `rows` (their current state); `ended` is also counted as a node run."""
        bodies = [node_event(self.execution_id, row.snapshot()) for row in rows]
        counts = Counter({f"node_runs|{ended.status}": 1}) if ended is not None else Counter()
        await self._send(bodies, counts)

    def bodies(self, rows: Iterable[NodeRow]) -> list[bytes]:
        """Event bodies for `rows` as they stand now (sent later with `send`)."""
        return [node_event(self.execution_id, row.snapshot()) for row in rows]

    async def send(self, bodies: list[bytes], counts: Counter) -> None:
        """A step's events (from `bodies`) and counter bumps ("node_runs|STATUS" -> n)."""
        await self._send(bodies, counts)

    async def snapshots(self, ended: list[EndedRow]) -> None:
        """Events for rows the database ended (their snapshots as JSON)."""
        bodies = [node_event(self.execution_id, row.snapshot) for row in ended]
        ran = sum(1 for row in ended if row.was_run)
        counts = Counter({f"node_runs|{ExecutionStatus.TERMINATED}": ran} if ran else {})
        await self._send(bodies, counts)

    async def raw(self, bodies: list[bytes]) -> None:
        """Other events of this run (review events), bodies already JSON."""
        await self._send(bodies, Counter())

    async def _send(self, bodies: list[bytes], counts: Counter) -> None:
        if not bodies and not counts:
            return
        async with self.engine.redis.pipeline(transaction=False) as pipe:
            for stream in self.streams:
                await self.engine.publisher.publish_many(pipe, stream, bodies)
            self.engine.count_in(pipe, counts)
            await pipe.execute()
