"""Running one node execution: charge, mark RUNNING, run the block, classify
what went wrong, charge its run time, record its end.

A block's own failure (its error, bad input, an output the database cannot
keep, a bug in it) fails the node at once: running it again would fail again.
What is not the block's (the database or Redis away, a sub-graph run's engine
failing, a run limit, a lost ownership) is raised to the job, which ends the run
or retries and resumes it. A cancelled node (stop, shutdown) is noted with what
it had done, for the stop to charge and keep.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol

import asyncpg
import redis.exceptions
from tortoise.exceptions import DBConnectionError

from app.blocks.base import (
    ERROR_PIN,
    Block,
    BlockError,
    BlockRunContext,
    InvalidBlockInput,
    ReviewDecision,
)
from app.clock import utcnow
from app.errors import AppError, ErrorCode
from app.models import ExecutionStatus
from app.services.blocks import unexpected_block_error
from app.services.credentials import node_credentials
from app.storable import first_unstorable
from app.transactions import finish_even_if_cancelled
from workers.engine.charging import after_run_minimum
from workers.engine.credit_budget import BUDGET_EXCEEDED, BudgetExceeded
from workers.engine.limits import RunLimitReached
from workers.engine.ownership import LostOwnership
from workers.engine.rows import NodeRow
from workers.engine.subgraphs import ChildAwaitsReview, SubGraphFailure, sub_graph_runner

INSUFFICIENT_CREDITS = "Insufficient credits"
# Raised through the node to the job: none of them is the block's failure.
_NOT_THE_BLOCKS = (RunLimitReached, LostOwnership, SubGraphFailure, ChildAwaitsReview)
# Our own stores failing under a block (ReadFile reads the database): retried.
_INFRASTRUCTURE = (
    DBConnectionError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    ConnectionError,
)


class GraphRun(Protocol):
    """What a node run needs from the run it belongs to (graph_run.GraphRun)."""

    engine: Any
    execution: Any
    topology: Any
    charger: Any
    cancelled: dict[uuid.UUID, NodeProgress]
    out_of_credits: bool
    depth: int
    reviews: Any

    async def mark_running(self, row: NodeRow, now: Any) -> bool: ...

    async def complete(
        self,
        row: NodeRow,
        outputs: dict[str, list[Any]],
        error: str | None,
        cost: int,
        hand_on: bool = False,
    ) -> tuple[NodeRow, bool] | None: ...

    async def run_child(self, execution: Any) -> ExecutionStatus: ...


@dataclass
class NodeProgress:
    """How far a node run got; what a stop charges and keeps."""

    row: NodeRow
    block: Block
    charged: int = 0
    started: float | None = None
    outputs: dict[str, list[Any]] = field(default_factory=dict)
    # Set when the run was cancelled: the seconds it had run by then.
    stopped_after: float | None = None
    # A person's decision, when the node waited for one (HumanReview reads it).
    review: ReviewDecision | None = None

    @property
    def seconds(self) -> float:
        if self.stopped_after is not None:
            return self.stopped_after
        return time.monotonic() - self.started if self.started is not None else 0.0


async def run_node(run: GraphRun, row: NodeRow) -> None:
    """Runs `row`, then each row its completion hands the node's slot on to."""
    following: tuple[NodeRow, bool] | None = (row, False)
    while following is not None:
        row, running = following
        progress = NodeProgress(row, run.topology.blocks[row.node_id])
        try:
            following = await _run(run, progress, running)
        except ChildAwaitsReview:
            # Its sub-graph run waits for a person: the row stays RUNNING and the run
            # waits with it; it runs again (re-attaching the child) after a decision.
            run.reviews.child_waits(row)
            return
        except asyncio.CancelledError:
            # Stopped or shut down: the row stays as stored (RUNNING re-runs on resume);
            # a stop charges and keeps what the progress says.
            progress.stopped_after = progress.seconds
            run.cancelled[row.id] = progress
            raise


async def _run(run: GraphRun, progress: NodeProgress, running: bool) -> tuple[NodeRow, bool] | None:
    """Runs one node; the row to run next in this slot, if its end handed one on.
    `running`: the previous node's end already wrote this row RUNNING (it needs
    no charge and no review, GraphRun.complete)."""
    row, block = progress.row, progress.block
    if not running:
        go_on, progress.review = await run.reviews.gate(row, block)
        if not go_on:
            return None  # waits for a person, or was rejected (uncharged)
        try:
            progress.charged = await _charge_up_front(run, progress)
        except BudgetExceeded:
            # Nothing charged; the node shows why, and the whole run ends FAILED.
            await finish_even_if_cancelled(
                run.complete(row, {ERROR_PIN: [BUDGET_EXCEEDED]}, BUDGET_EXCEEDED, 0)
            )
            raise
        except AppError as exc:
            if exc.code != ErrorCode.INSUFFICIENT_CREDITS:
                raise
            run.out_of_credits = True
            await finish_even_if_cancelled(
                run.complete(row, {ERROR_PIN: [INSUFFICIENT_CREDITS]}, INSUFFICIENT_CREDITS, 0)
            )
            return None
        if not await finish_even_if_cancelled(run.mark_running(row, utcnow())):
            return None  # ended meanwhile (a stop): nothing to run
    progress.started = time.monotonic()
    try:
        error = await _run_block(run, progress)
    except BudgetExceeded:
        # Its run time used up what the budget had: charged what the budget held for it.
        progress.charged += await run.charger.after(row, block, progress.seconds)
        progress.started = None
        outputs = {**progress.outputs, ERROR_PIN: [BUDGET_EXCEEDED]}
        await finish_even_if_cancelled(
            run.complete(row, outputs, BUDGET_EXCEEDED, progress.charged)
        )
        raise
    outputs = progress.outputs
    if error is None and (unstorable := first_unstorable(outputs)) is not None:
        # e.g. a web page with U+0000: the database cannot keep it, so the node fails
        # with a clear message instead of the run retrying forever.
        problem, path = unstorable
        outputs, error = {}, f"Output cannot be stored: {problem} ({path})"
    if error is not None:
        outputs.setdefault(ERROR_PIN, []).append(error)
    progress.charged += await run.charger.after(row, block, progress.seconds)
    progress.started = None  # charged: a stop now has nothing more to charge
    return await finish_even_if_cancelled(
        run.complete(row, outputs, error, progress.charged, hand_on=True)
    )


async def _charge_up_front(run: GraphRun, progress: NodeProgress) -> int:
    """The up-front charge runs to its end even when the node is cancelled meanwhile
    (a stop, or another node passing the run's budget), so the stop knows what it
    charged and the node's row keeps it."""
    charge = asyncio.ensure_future(run.charger.before(progress.row, progress.block))
    try:
        return await asyncio.shield(charge)
    except asyncio.CancelledError:
        # Cancelled again while waiting (a stop arriving while the run already
        # cancels its nodes for a budget failure): keep waiting, or the charge
        # ends unseen and its node and the run's cost miss it.
        while not charge.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait([charge])
        if not charge.cancelled() and charge.exception() is None:
            progress.charged = charge.result()
        raise


async def _run_block(run: GraphRun, progress: NodeProgress) -> str | None:
    """Runs the block, gathering its values in `progress.outputs`; its error, if any."""
    row, block = progress.row, progress.block
    execution = run.execution
    try:
        typed = block.validate_input(row.input_data)
        context = BlockRunContext(
            settings=run.engine.settings,
            user_id=execution.user_id,  # type: ignore[attr-defined]
            graph_id=execution.graph_id,
            execution_id=execution.id,
            node_id=row.node_id,
            node_execution_id=row.id,
            run_sub_graph=sub_graph_runner(
                execution,
                row,
                run.depth,
                run.engine.settings.MAX_SUBGRAPH_DEPTH,
                run.engine.publisher,
                run.run_child,
            ),
            # The run's stored credentials for this block's fields, decrypted
            # (a BlockError when they were deleted since the run was validated).
            credentials=await node_credentials(run.engine.settings, execution, block),
            review=progress.review,
        )
        work = _gather_outputs(block, typed, context, progress)
        per_second = after_run_minimum(block, row.input_data)
        budget = run.charger.budget
        if budget is not None and per_second and progress.started is not None:
            await budget.run_within(row.id, per_second, progress.started, work)
        else:
            await work
    except _NOT_THE_BLOCKS:
        raise
    except InvalidBlockInput as exc:
        return f"Invalid input: {exc}"
    except BlockError as exc:
        return str(exc)
    except _INFRASTRUCTURE:
        raise
    except Exception as exc:
        return unexpected_block_error(block, exc)
    return None


async def _gather_outputs(
    block: Block, typed: Any, context: BlockRunContext, progress: NodeProgress
) -> None:
    async for pin, value in block.run(typed, context):
        progress.outputs.setdefault(pin, []).append(value)
