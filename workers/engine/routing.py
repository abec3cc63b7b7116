"""Where values go: per-pin FIFO queues of node executions waiting for inputs.

A value arriving on a pin goes to the oldest INCOMPLETE execution of that node
still missing the pin, else starts a new one; once every linked pin holds a
value the execution is QUEUED (defaults under the values). A static link's
value stays for every later run of its sink. Pure bookkeeping, no I/O: the run
writes what `route` returns in one statement.

Every step is O(1) per value (a queue per (node, pin) of the executions still
missing it), so a ForEach of 100,000 items routes in linear time; long routings
give the event loop a turn every few thousand values.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from app.models import ExecutionStatus, Node
from workers.engine.rows import NodeRow
from workers.engine.topology import Topology

# Values routed between two turns of the event loop.
_VALUES_PER_TURN = 2000


@dataclass
class Routed:
    """What one node's outputs changed: rows to insert, rows whose inputs or status
    changed (not among `created`), and the rows that became QUEUED."""

    created: list[NodeRow] = field(default_factory=list)
    updated: dict[uuid.UUID, NodeRow] = field(default_factory=dict)
    queued: list[NodeRow] = field(default_factory=list)
    _created_ids: set[uuid.UUID] = field(default_factory=set)

    def touch(self, row: NodeRow) -> None:
        if row.id not in self._created_ids:
            self.updated[row.id] = row

    def add(self, row: NodeRow) -> None:
        self.created.append(row)
        self._created_ids.add(row.id)

    def holds(self, row: NodeRow) -> bool:
        """Whether this step writes `row` (creates or changes it)."""
        return self.holds_id(row.id)

    def holds_id(self, row_id: uuid.UUID) -> bool:
        return row_id in self._created_ids or row_id in self.updated


class Router:
    def __init__(
        self, execution_id: uuid.UUID, topology: Topology, take_budget: Callable[[int], None]
    ) -> None:
        self.execution_id = execution_id
        self.topology = topology
        self.take_budget = take_budget
        self.arrival = 0
        # sink node -> pin -> the latest value of its static link
        self.statics: dict[uuid.UUID, dict[str, Any]] = {}
        # INCOMPLETE rows per node, in arrival order
        self.pending: dict[uuid.UUID, dict[uuid.UUID, NodeRow]] = {}
        # (node, non-static pin) -> INCOMPLETE rows still missing it, oldest first
        self.missing: dict[tuple[uuid.UUID, str], deque[NodeRow]] = {}

    # ------------------------------------------------------------ new rows

    def seed(self, node: Node, inputs: dict[str, Any], now: datetime) -> NodeRow:
        """A starting node's execution, QUEUED at once."""
        self.take_budget(1)
        self.arrival += 1
        return NodeRow(
            id=uuid.uuid4(),
            node_id=node.id,
            block_id=node.block_id,
            status=ExecutionStatus.QUEUED,
            input_data=inputs,
            arrival=self.arrival,
            queued_at=now,
        )

    def _open(self, node_id: uuid.UUID, routed: Routed) -> NodeRow:
        self.take_budget(1)
        self.arrival += 1
        node = self.topology.nodes[node_id]
        row = NodeRow(
            id=uuid.uuid4(),
            node_id=node_id,
            block_id=node.block_id,
            status=ExecutionStatus.INCOMPLETE,
            input_data={},
            arrival=self.arrival,
        )
        self._wait(row)
        routed.add(row)
        return row

    def _wait(self, row: NodeRow) -> None:
        """Registers an INCOMPLETE row in its node's queues."""
        self.pending.setdefault(row.node_id, {})[row.id] = row
        for pin, is_static in self.topology.linked_pins.get(row.node_id, {}).items():
            if not is_static and pin not in row.input_data:
                self.missing.setdefault((row.node_id, pin), deque()).append(row)

    # ------------------------------------------------------------ resuming

    def restore(self, rows: Iterable[NodeRow], max_arrival: int) -> None:
        """INCOMPLETE rows (in arrival order) of a resumed run."""
        self.arrival = max(self.arrival, max_arrival)
        for row in rows:
            self._wait(row)

    def restore_statics(self, finished: Iterable[tuple[uuid.UUID, dict[str, list[Any]]]]) -> None:
        """Static values from what static sources yielded, in completion order."""
        for source_id, outputs in finished:
            for link in self.topology.links_from.get(source_id, ()):
                values = outputs.get(link.source_name)
                if link.is_static and values:
                    self.statics.setdefault(link.sink_id, {})[link.sink_name] = values[-1]

    # ------------------------------------------------------------ routing

    async def route(
        self,
        source_id: uuid.UUID,
        outputs: dict[str, list[Any]],
        now: datetime,
        routed: Routed | None = None,
    ) -> Routed:
        """Hands each output value along every link from its pin; adds what that
        changed to `routed` (one write may carry several nodes' routing)."""
        routed = routed if routed is not None else Routed()
        handled = 0
        for link in self.topology.links_from.get(source_id, ()):
            sink, pin = link.sink_id, link.sink_name
            for value in outputs.get(link.source_name, ()):
                if link.is_static:
                    self._route_static(sink, pin, value, routed, now)
                else:
                    queue = self.missing.get((sink, pin))
                    if not queue:
                        self._open(sink, routed)
                        queue = self.missing[(sink, pin)]
                    row = queue.popleft()
                    row.input_data[pin] = value
                    routed.touch(row)
                    self._queue_if_ready(row, routed, now)
                handled += 1
                if handled % _VALUES_PER_TURN == 0:
                    await asyncio.sleep(0)
        return routed

    def _route_static(
        self, sink: uuid.UUID, pin: str, value: Any, routed: Routed, now: datetime
    ) -> None:
        self.statics.setdefault(sink, {})[pin] = value
        targets = list(self.pending.get(sink, {}).values())
        if not targets and all(self.topology.linked_pins.get(sink, {}).values()):
            targets = [self._open(sink, routed)]
        for row in targets:
            row.input_data.setdefault(pin, value)
            routed.touch(row)
            self._queue_if_ready(row, routed, now)

    def _queue_if_ready(self, row: NodeRow, routed: Routed, now: datetime) -> None:
        statics = self.statics.get(row.node_id, {})
        for pin, is_static in self.topology.linked_pins.get(row.node_id, {}).items():
            if pin in row.input_data:
                continue
            if is_static and pin in statics:
                row.input_data[pin] = statics[pin]
                continue
            return
        del self.pending[row.node_id][row.id]
        node = self.topology.nodes[row.node_id]
        row.input_data = {**(node.input_default or {}), **row.input_data}
        row.status = ExecutionStatus.QUEUED
        row.queued_at = now
        routed.queued.append(row)
