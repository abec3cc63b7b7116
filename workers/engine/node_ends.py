"""Node ends, written in batches: one statement and one Redis round trip each.

A node's end is routed and written under the run's lock, in the order ends take
it. Ends that arrive while a write is in flight wait for the lock; the first of
them to get it writes every end then waiting (a group commit): sixteen nodes
ending together cost one statement, not sixteen. Each end is answered once its
batch is written and announced.

An end may hand its node's slot on: to the oldest ready row, else to one its
batch queued. Such a row that needs no charge and no review goes RUNNING in the
batch's statement (as mark_running would, only if it is still to run), and its
RUNNING event follows the batch's other events: its events still read QUEUED,
RUNNING, then its end.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from app.clock import utcnow
from app.models import ExecutionStatus
from workers.engine.routing import Routed
from workers.engine.rows import NodeRow
from workers.engine.store import UnstorableOutput, storable_outputs

log = logging.getLogger(__name__)

# A node's slot handed on: the row to run next, and whether it is RUNNING already.
Following = tuple[NodeRow, bool] | None


@dataclass(eq=False)
class _End:
    row: NodeRow
    outputs: dict[str, list[Any]]
    error: str | None
    cost: int
    hand_on: bool
    answer: asyncio.Future
    taken: bool = False
    # Set while its batch is written: the rows its values queued, the row its
    # slot goes to and whether that one starts in the same write.
    queued: list[NodeRow] = field(default_factory=list)
    following: NodeRow | None = None
    starts: bool = False


def ended(row: NodeRow, outputs: dict[str, list[Any]], error: str | None, cost: int) -> None:
    """Fills in a row's end (the caller holds the run's lock)."""
    row.status = ExecutionStatus.FAILED if error else ExecutionStatus.COMPLETED
    row.output_data = outputs
    row.ended_at = utcnow()
    row.error = error
    row.cost = cost


class NodeEnds:
    def __init__(self, run: Any) -> None:
        self.run = run  # graph_run.GraphRun
        self.waiting: list[_End] = []

    async def complete(
        self,
        row: NodeRow,
        outputs: dict[str, list[Any]],
        error: str | None,
        cost: int,
        hand_on: bool,
    ) -> Following:
        try:
            storable_outputs(outputs, self.run.engine.settings.MAX_NODE_OUTPUT_CHARS)
        except UnstorableOutput as exc:
            # Values JSON cannot carry (a lone surrogate from a web page): the node
            # fails at once; retrying would only meet them again.
            error = f"Output cannot be stored: {exc}"[:1000]
            outputs = {"error": [error]}
        end = _End(row, outputs, error, cost, hand_on, asyncio.get_running_loop().create_future())
        self.waiting.append(end)
        batch: list[_End] = []
        try:
            async with self.run.lock:
                if not end.taken:  # else an earlier batch took it: its writer answers
                    batch, self.waiting = self.waiting, []
                    for each in batch:
                        each.taken = True
                    began = await self._write(batch)
            if batch:
                await self._announce(batch, began)
        except BaseException as exc:
            for each in batch:
                if each is not end and not each.answer.done():
                    each.answer.set_exception(exc)  # their callers raise it too
            raise
        return await end.answer

    # ------------------------------------------------------------ writing

    async def _write(self, batch: list[_End]) -> set[uuid.UUID]:
        """Routes and writes the batch; the ids of the handed-on rows that went RUNNING."""
        run = self.run
        routed = Routed()
        starts: dict[uuid.UUID, Any] = {}
        given: set[uuid.UUID] = set()
        for end in batch:
            ended(end.row, end.outputs, end.error, end.cost)
            first = len(routed.queued)
            await run.router.route(end.row.node_id, end.outputs, end.row.ended_at, routed)
            end.queued = routed.queued[first:]
            end.following = self._next_in_slot(routed, given) if end.hand_on else None
            if end.following is not None:
                given.add(end.following.id)
            end.starts = end.following is not None and self._starts_at_once(end.following)
            if end.starts:
                starts[end.following.id] = end.row.ended_at
        try:
            return await run.store.complete(
                run.fence, run.execution.id, [end.row for end in batch], routed, starts
            )
        except UnstorableOutput as exc:
            # The routing that assumed these values is read back from what was stored.
            await run.restore_router()
            for end in reversed(batch):
                if end.following is not None and not routed.holds(end.following):
                    run.ready.appendleft(end.following)
                end.queued, end.following, end.starts = [], None, False
            if len(batch) == 1:
                # The database refused the values: the node fails without them.
                end = batch[0]
                error = f"Output cannot be stored: {exc}"[:1000]
                ended(end.row, {"error": [error]}, error, end.cost)
                await run.store.complete(run.fence, run.execution.id, [end.row], Routed(), {})
                return set()
        # Which end the database refused is not known: one at a time, then.
        log.info("the database refused %d node ends written together; one at a time", len(batch))
        began: set[uuid.UUID] = set()
        for end in batch:
            began |= await self._write([end])
        return began

    def _next_in_slot(self, routed: Routed, given: set[uuid.UUID]) -> NodeRow | None:
        """The row a node's slot goes to: the oldest ready one, else one this batch
        queued (and not yet given a slot)."""
        run = self.run
        if run.out_of_credits:
            return None
        if run.ready:
            return run.ready.popleft()
        for row in routed.queued:
            if row.id not in given:
                return row
        return None

    def _starts_at_once(self, row: NodeRow) -> bool:
        """Whether `row` may go RUNNING without a charge or a review first: its
        block costs nothing (charging it would do nothing) and asks nobody."""
        run = self.run
        block = run.topology.blocks[row.node_id]
        budget = run.charger.budget
        return (
            not block.costs
            and (budget is None or budget.fits(0))
            and run.reviews.kind(block) is None
            and row.id not in run.reviews.decisions
        )

    # ------------------------------------------------------------ announcing

    async def _announce(self, batch: list[_End], began: set[uuid.UUID]) -> None:
        """The batch's events in one round trip; then the rows it queued are ready
        to run and every end gets its answer."""
        run = self.run
        bodies = run.events.bodies([r for end in batch for r in (end.row, *end.queued)])
        counts: Counter = Counter()
        for end in batch:
            if end.row.error:
                run.failed = True
            counts[f"node_runs|{end.row.status}"] += 1
        for end in batch:
            if end.starts and end.following.id in began:
                end.following.status = ExecutionStatus.RUNNING
                end.following.started_at = end.row.ended_at
                bodies += run.events.bodies([end.following])
        await run.events.send(bodies, counts)
        handed = {end.following.id for end in batch if end.following is not None}
        run.ready.extend(r for end in batch for r in end.queued if r.id not in handed)
        run.wake_if_room()
        for end in batch:
            if end.following is None or (end.starts and end.following.id not in began):
                end.answer.set_result(None)  # nothing to hand on, or it ended meanwhile (a stop)
            else:
                end.answer.set_result((end.following, end.starts))
