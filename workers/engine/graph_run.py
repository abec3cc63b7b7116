"""Running one graph execution (SEMANTICS.md §7): its lifecycle.

State lives in the database so another worker can resume after a crash:
- a node execution is INCOMPLETE while it waits for values on some linked pins
  (routing.py), QUEUED once every linked pin holds one, then RUNNING, then
  COMPLETED or FAILED (TERMINATED when stopped);
- a node's completion, its outputs and the rows its values create or fill are
  written in one statement (store_postgres.py; nodes ending together share it,
  and the row a node hands its slot on to starts in it: node_ends.py), so a
  resumed run never re-runs a completed node and never loses or doubles a
  value; static link values and
  the execution's outputs are read back from completed rows, never rewritten per
  node. A node that was QUEUED or RUNNING when its worker died runs again under
  the same id, so its charges (keyed by that id) are never taken twice;
- every write carries the runner's fence (ownership.py): a runner that another
  one took over from stops at its next write.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import deque
from typing import Any

from app.blocks.base import BlockError
from app.clock import utcnow
from app.events import EventReader
from app.models import TERMINAL_STATUSES, Execution, ExecutionStatus
from app.services import reviews as review_service
from app.services.execution_outputs import execution_outputs
from app.services.executions import publish_status
from app.transactions import finish_even_if_cancelled
from workers.engine.announce import Announcer
from workers.engine.charging import Charger
from workers.engine.context import EngineContext
from workers.engine.credit_budget import CreditBudget
from workers.engine.family_end import end_family
from workers.engine.limits import RunBudget
from workers.engine.node_ends import Following, NodeEnds
from workers.engine.node_run import INSUFFICIENT_CREDITS, NodeProgress, run_node
from workers.engine.ownership import Fence
from workers.engine.reviews import RunReviews, safe_mode_of
from workers.engine.routing import Router
from workers.engine.rows import NodeRow
from workers.engine.stats import execution_stats
from workers.engine.store import dumps
from workers.engine.topology import Topology

log = logging.getLogger(__name__)


class GraphRun:
    def __init__(
        self,
        engine: EngineContext,
        execution: Execution,
        fence: Fence,
        ancestors: tuple[uuid.UUID, ...] = (),
        budget: RunBudget | None = None,
        credit_budget: CreditBudget | None = None,
    ) -> None:
        self.engine = engine
        self.execution = execution
        self.fence = fence
        self.store = engine.store
        # Executions above a sub-graph run: its node events roll up to them.
        self.ancestors = ancestors
        self.budget = budget or RunBudget(engine.settings.MAX_NODE_RUNS_PER_EXECUTION)
        self.events = Announcer(engine, execution.id, ancestors)
        # maxCredits of the root execution, shared with every sub-graph run below it.
        self.credit_budget = credit_budget
        self.charger = Charger(engine, execution, credit_budget)
        # Completions are written one batch at a time, in the order they take this lock.
        self.lock = asyncio.Lock()
        self.ends = NodeEnds(self)
        self.ready: deque[NodeRow] = deque()
        self.tasks: dict[asyncio.Task, NodeRow] = {}
        self._woken: asyncio.Future | None = None
        # Node runs a stop cancelled: what they had yielded and charged, for terminate().
        self.cancelled: dict[uuid.UUID, NodeProgress] = {}
        # Sub-graph runs this run started, so a stop ends them with what they know.
        self.children: dict[uuid.UUID, GraphRun] = {}
        self.failed = False
        self.out_of_credits = False
        self.topology: Topology = None  # type: ignore[assignment]
        self.router: Router = None  # type: ignore[assignment]
        # Set once the run writes its end; a stop arriving after that lets it finish.
        self.finishing = False
        # Nodes waiting for a person (workers/engine/reviews.py).
        self.reviews = RunReviews(self)

    @property
    def depth(self) -> int:
        return len(self.ancestors)

    # ------------------------------------------------------------ lifecycle

    async def run(self) -> ExecutionStatus:
        """Runs (or resumes) the execution to its end; returns its final status."""
        execution = self.execution
        if execution.status in TERMINAL_STATUSES:
            await self._announce_end()
            return execution.status
        try:
            self.topology = await Topology.load(execution)
        except BlockError as exc:
            return await self.finish(ExecutionStatus.FAILED, str(exc))
        self.router = Router(execution.id, self.topology, self.budget.take)
        if not self.ancestors:
            # Sub-graph runs take their root's setting (child()).
            self.reviews.safe_mode = await safe_mode_of(execution.user_id, execution.graph_id)  # type: ignore[attr-defined]
        if execution.status == ExecutionStatus.QUEUED:
            if not await self._start():
                return execution.status  # stopped before it could start
        else:
            await self._resume()
        while True:
            try:
                await self._drive()
            except BaseException:
                # Cancelled (stop, shutdown) or an error outside any block: no node task
                # may outlive the run; their rows stay as stored, to resume from.
                await self.cancel_tasks()
                raise
            if self.out_of_credits or not self.reviews.any_waiting:
                break
            # Decided while this run went on: they run now; else the run waits.
            decided = await self.reviews.take_decided()
            if not decided:
                return await finish_even_if_cancelled(self._pause())
            await self._set_status(ExecutionStatus.RUNNING)
            self.ready.extend(decided)
        status = ExecutionStatus.FAILED if self.failed else ExecutionStatus.COMPLETED
        return await self.finish(status, INSUFFICIENT_CREDITS if self.out_of_credits else None)

    async def terminate(
        self, status: ExecutionStatus = ExecutionStatus.TERMINATED, error: str = "Stopped"
    ) -> None:
        """Stop: cancel running nodes (they pay for the seconds they ran); everything
        unfinished ends TERMINATED with its event, sub-graph runs included (they end
        `status` too, all at once: family_end.py); the execution ends `status` with
        `error`."""
        await end_family(self, status, error)

    def child(self, execution: Execution) -> GraphRun:
        child = GraphRun(
            self.engine,
            execution,
            self.fence,
            (self.execution.id, *self.ancestors),
            self.budget,
            self.credit_budget,
        )
        child.reviews.safe_mode = self.reviews.safe_mode
        return child

    async def run_child(self, execution: Execution) -> ExecutionStatus:
        child = self.children[execution.id] = self.child(execution)
        return await child.run()

    async def _announce_end(self) -> None:
        """A worker that died between writing the end and publishing it left
        subscribers waiting: publish the end unless it is the last event."""
        reader = EventReader(self.engine.redis, self.engine.settings.REDIS_PREFIX)
        seq = await reader.current_seq(self.execution.id)
        last = await reader.after(self.execution.id, seq - 1) if seq else []
        if (
            last
            and last[-1].kind == "execution"
            and last[-1].data["execution"]["status"] == str(self.execution.status)
        ):
            return
        await publish_status(self.engine.publisher, self.execution)

    async def _start(self) -> bool:
        now = utcnow()
        seeds = []
        for node in self.topology.starting_nodes():
            inputs = dict(node.input_default or {})
            # Inputs set on one node for this run (a webhook trigger's body).
            inputs.update((self.execution.node_inputs or {}).get(str(node.id), {}))
            if self.topology.blocks[node.id].name == "AgentInput":
                name = inputs.get("name")
                if name in self.execution.inputs:
                    inputs["value"] = self.execution.inputs[name]
            seeds.append(self.router.seed(node, inputs, now))
        if not await self.store.start(self.fence, self.execution.id, now, seeds):
            await self.execution.refresh_from_db()  # stopped (or started elsewhere) meanwhile
            return False
        self.execution.status = ExecutionStatus.RUNNING
        self.execution.started_at = now
        await publish_status(self.engine.publisher, self.execution)
        await self.events.rows(seeds)
        self.ready.extend(seeds)
        return True

    async def _resume(self) -> None:
        state = await self.restore_router()
        await self.reviews.load()
        for row in state.unfinished:
            if row.status == ExecutionStatus.INCOMPLETE:
                continue
            if row.status == ExecutionStatus.REVIEW and not await self.reviews.take(row):
                continue  # still waits for a person
            self.ready.append(row)
        if self.ready:
            await self._set_status(ExecutionStatus.RUNNING)
        self.failed = state.failed
        log.info("resuming execution %s with %d node(s) to run", self.execution.id, len(self.ready))

    async def restore_router(self) -> Any:
        state = await self.store.resume_state(self.execution.id, self.topology.static_sources())
        arrival = self.router.arrival
        self.router = Router(self.execution.id, self.topology, self.budget.take)
        self.router.restore_statics(state.static_outputs)
        self.router.restore(
            (row for row in state.unfinished if row.status == ExecutionStatus.INCOMPLETE),
            max(arrival, state.max_arrival),
        )
        return state

    async def _set_status(self, status: ExecutionStatus) -> None:
        """RUNNING again after waiting for review, or REVIEW: written, then announced."""
        if self.execution.status == status:
            return
        await self.store.finish(self.fence, self.execution.id, {"status": str(status)})
        self.execution.status = status
        await publish_status(self.engine.publisher, self.execution)

    async def _pause(self) -> ExecutionStatus:
        """Only nodes waiting for a person are left: the job ends, the run waits in
        REVIEW until a decision enqueues it again."""
        was = self.execution.status
        # Waiting, it holds no run slot either (app/services/run_slots.py): decided,
        # it is admitted again before it resumes.
        changes: dict[str, Any] = {"status": str(ExecutionStatus.REVIEW), "admitted_at": None}
        await self.store.finish(self.fence, self.execution.id, changes)
        self.execution.status = ExecutionStatus.REVIEW
        self.execution.admitted_at = None
        if was != ExecutionStatus.REVIEW:
            await publish_status(self.engine.publisher, self.execution)
            await self.engine.count("executions", ExecutionStatus.REVIEW)
        log.info("execution %s waits for review", self.execution.id)
        return ExecutionStatus.REVIEW

    async def _drive(self) -> None:
        limit = self.engine.node_concurrency
        loop = asyncio.get_running_loop()
        while True:
            while self.ready and len(self.tasks) < limit and not self.out_of_credits:
                row = self.ready.popleft()
                self.tasks[asyncio.create_task(run_node(self, row))] = row
            if not self.tasks:
                return
            # A node task hands its slot on to the next row itself; it wakes this
            # loop when rows are ready and slots free (complete()).
            self._woken = loop.create_future()
            done, _ = await asyncio.wait(
                [*self.tasks, self._woken], return_when=asyncio.FIRST_COMPLETED
            )
            for task in done:
                if task is not self._woken:
                    self.tasks.pop(task)
                    task.result()  # a failure outside any block must surface, not hang the run

    def wake_if_room(self) -> None:
        """Rows are ready: the drive loop starts them if slots are free."""
        if self.ready and len(self.tasks) < self.engine.node_concurrency:
            if self._woken is not None and not self._woken.done():
                self._woken.set_result(None)

    async def cancel_tasks(self) -> None:
        for task in self.tasks:
            task.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks.clear()

    async def finish(self, status: ExecutionStatus, error: str | None) -> ExecutionStatus:
        """Writes the run's end and announces it, even if cancelled meanwhile (a
        stop reaching a sub-graph run that is just ending): an end written but
        never announced leaves its subscribers waiting, and the stop, seeing the
        run ended, would announce nothing for it."""
        return await finish_even_if_cancelled(self._end(status, error))

    async def _end(self, status: ExecutionStatus, error: str | None) -> ExecutionStatus:
        self.finishing = True
        execution = self.execution
        now = utcnow()
        if status != ExecutionStatus.TERMINATED:
            # Nodes never started because the run failed (credits ran out) end too.
            never_ran = (ExecutionStatus.QUEUED, ExecutionStatus.REVIEW)
            ended_rows = await self.store.end_unfinished(
                self.fence, [execution.id], never_ran, now, {}
            )
            await self.events.snapshots(ended_rows)
        if self.reviews.any_asked:
            # Ended while some nodes waited (a stop, credits out): their reviews close.
            cancelled = await review_service.cancel_pending([execution.id], now)
            await self.events.raw(
                [dumps(review_service.review_event(r)).encode() for r in cancelled]
            )
        if error is None and status == ExecutionStatus.FAILED:
            error = await self.store.first_error(execution.id) or "A node failed"
        execution.status = status
        execution.ended_at = now
        execution.error = error
        execution.started_at = execution.started_at or now
        execution.outputs = await execution_outputs(execution.id)
        execution.stats = await execution_stats(execution)
        await self.store.finish(
            self.fence,
            execution.id,
            {
                "status": str(status),
                "ended_at": now,
                "error": error,
                "stats": execution.stats,
                "started_at": execution.started_at,
                "outputs": execution.outputs,
            },
        )
        await publish_status(self.engine.publisher, execution)
        await self.engine.run_ended(execution)
        return status

    # ------------------------------------------------------------ node steps

    async def mark_running(self, row: NodeRow, now) -> bool:
        if not await self.store.mark_running(self.fence, row.id, now):
            return False
        row.status = ExecutionStatus.RUNNING
        row.started_at = now
        await self.events.rows([row])
        return True

    async def complete(
        self,
        row: NodeRow,
        outputs: dict[str, list[Any]],
        error: str | None,
        cost: int,
        hand_on: bool = False,
    ) -> Following:
        """Record the node's end and hand its outputs on, in one write (with the
        ends of other nodes ending meanwhile: node_ends.py). With `hand_on` the
        node's slot goes to the next row to run, returned."""
        return await self.ends.complete(row, outputs, error, cost, hand_on)
