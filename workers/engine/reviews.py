"""Human review inside a run (issue 15), resumable by the rules of SEMANTICS.md §7.

A node that must wait for a person (a HumanReview block, or a sensitive block's
node when the graph's humanInTheLoopSafeMode is on) is not charged and not run:
its row goes REVIEW and its PENDING review is stored in the same statement. The
run drives everything else; when only waiting nodes are left it ends its job in
status REVIEW, holding no worker, lock or lease. A decision (app/services/reviews.py)
enqueues the run again; the resumed run moves each decided row back to QUEUED
(with the approved, maybe edited, inputs) in one fenced write and runs it as
usual, so a crash at any point resumes from what is stored:
- approved: the node runs (and is charged) like any other;
- rejected or expired: a sensitive node ends FAILED with the reason on its
  `error` pin, uncharged; a HumanReview node runs and yields the reason on `rejected`.
A SubGraph node whose child run waits stays RUNNING; the parent waits with it
and re-runs it (re-attaching the same child run) once one of the child's nodes
is decided.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import orjson
from tortoise.expressions import Subquery

from app.blocks.base import ERROR_PIN, Block, InvalidBlockInput, ReviewDecision
from app.clock import utcnow
from app.models import (
    ExecutionStatus,
    LibraryAgent,
    NodeExecution,
    NodeReview,
    NodeReviewKind,
    NodeReviewStatus,
)
from app.services.reviews import review_event
from app.transactions import finish_even_if_cancelled
from workers.engine.rows import NodeRow

HUMAN_REVIEW_BLOCK = "HumanReview"


def rejection(decision: ReviewDecision) -> str:
    return f"Rejected in review: {decision.message or 'no reason given'}"[:1000]


def decision_of(review: NodeReview) -> ReviewDecision:
    return ReviewDecision(
        approved=review.status == NodeReviewStatus.APPROVED,
        data=review.edited,
        message=review.review_message,
    )


async def safe_mode_of(user_id: uuid.UUID, graph_id: uuid.UUID) -> bool:
    """The graph's humanInTheLoopSafeMode, as its runner set it in their library."""
    settings = (
        await LibraryAgent.filter(user_id=user_id, graph_id=graph_id)
        .first()
        .values_list("settings", flat=True)
    )
    return bool((settings or {}).get("human_in_the_loop_safe_mode", False))


class RunReviews:
    """One run's nodes that wait for a person, and the decisions it has read."""

    def __init__(self, run: Any) -> None:
        self.run = run
        self.safe_mode = False
        # REVIEW rows without a decision yet, by id.
        self.waiting: dict[uuid.UUID, NodeRow] = {}
        # SubGraph rows (RUNNING) whose child run waits for a decision.
        self.waiting_children: dict[uuid.UUID, NodeRow] = {}
        self.decisions: dict[uuid.UUID, ReviewDecision] = {}
        # What each decided review was for: it holds even if the setting changed since.
        self.kinds: dict[uuid.UUID, NodeReviewKind] = {}
        self._pending: set[uuid.UUID] = set()

    @property
    def any_asked(self) -> bool:
        """Whether this run has (or had) nodes waiting: only then can a review be open."""
        return bool(self.waiting or self._pending or self.decisions)

    @property
    def any_waiting(self) -> bool:
        return bool(self.waiting or self.waiting_children)

    def kind(self, block: Block) -> NodeReviewKind | None:
        if block.name == HUMAN_REVIEW_BLOCK:
            return NodeReviewKind.BLOCK
        if block.sensitive and self.safe_mode:
            return NodeReviewKind.SENSITIVE_NODE
        return None

    async def load(self) -> None:
        """The stored reviews of this run (on resume)."""
        for review in await NodeReview.filter(execution_id=self.run.execution.id):
            if review.status == NodeReviewStatus.PENDING:
                self._pending.add(review.id)
            elif review.status != NodeReviewStatus.CANCELLED:
                self._decided(review)

    def _decided(self, review: NodeReview) -> None:
        self.decisions[review.id] = decision_of(review)
        self.kinds[review.id] = NodeReviewKind(review.kind)

    async def take(self, row: NodeRow) -> bool:
        """A REVIEW row found on resume: True when decided (it is QUEUED again, to run)."""
        decision = self.decisions.get(row.id)
        if decision is None:
            self.waiting[row.id] = row
            return False
        edits_inputs = self.kinds[row.id] == NodeReviewKind.SENSITIVE_NODE
        if decision.approved and decision.data is not None and edits_inputs:
            row.input_data = decision.data
        await self.run.store.take_reviewed(self.run.fence, row.id, row.input_data)
        row.status = ExecutionStatus.QUEUED
        return True

    async def gate(self, row: NodeRow, block: Block) -> tuple[bool, ReviewDecision | None]:
        """Before a node is charged and run: (whether it runs now, the decision it runs with)."""
        decision = self.decisions.get(row.id)
        if decision is None:
            kind = self.kind(block)
            if kind is None:
                return True, None
            try:
                block.validate_input(row.input_data)
            except InvalidBlockInput:
                return True, None  # it fails as usual: nothing to ask anyone
            await self._ask(row, kind)
            return False, None
        if self.kinds[row.id] == NodeReviewKind.SENSITIVE_NODE and not decision.approved:
            error = rejection(decision)
            await finish_even_if_cancelled(self.run.complete(row, {ERROR_PIN: [error]}, error, 0))
            return False, None
        return True, decision

    async def _ask(self, row: NodeRow, kind: NodeReviewKind) -> None:
        run = self.run
        execution = run.execution
        now = utcnow()
        data: Any = row.input_data
        message = None
        if kind == NodeReviewKind.BLOCK:
            data, message = row.input_data.get("data"), row.input_data.get("message") or None
        review = NodeReview(
            id=row.id,
            user_id=execution.user_id,
            execution_id=execution.id,
            root_execution_id=run.fence.root_id,
            graph_id=execution.graph_id,
            graph_version=execution.graph_version,
            node_id=row.node_id,
            block_id=row.block_id,
            kind=kind,
            status=NodeReviewStatus.PENDING,
            data=NodeReview.box(data),
            message=message,
            created_at=now,
            expires_at=now + timedelta(hours=run.engine.settings.REVIEW_TIMEOUT_HOURS),
        )
        if not await finish_even_if_cancelled(run.store.await_review(run.fence, review)):
            return  # ended meanwhile (a stop)
        row.status = ExecutionStatus.REVIEW
        self.waiting[row.id] = row
        self._pending.add(row.id)
        await run.events.rows([row])
        await run.events.raw([orjson.dumps(review_event(review), default=str)])

    def child_waits(self, row: NodeRow) -> None:
        self.waiting_children[row.id] = row

    async def take_decided(self) -> list[NodeRow]:
        """Rows decided since they began to wait (while this run went on), now QUEUED,
        and SubGraph rows whose child has a decided node to go on with."""
        ready: list[NodeRow] = []
        if self.waiting:
            # By execution, not by id list: a run may wait on more nodes than a
            # statement takes arguments (32,767).
            decided = NodeReview.filter(execution_id=self.run.execution.id).exclude(
                status__in=[NodeReviewStatus.PENDING, NodeReviewStatus.CANCELLED]
            )
            for review in await decided:
                if review.id not in self.waiting:
                    continue  # acted on before
                self._decided(review)
                row = self.waiting.pop(review.id)
                if await self.take(row):
                    ready.append(row)
        if self.waiting_children and await self._child_decided():
            ready.extend(self.waiting_children.values())
            self.waiting_children.clear()
        return ready

    async def _child_decided(self) -> bool:
        """Whether some decision under this run's root is still to act on (its node
        still waits): then the waiting SubGraph rows re-run and their children resume
        (a child with nothing decided simply waits again)."""
        decided = NodeReview.filter(
            root_execution_id=self.run.fence.root_id,
            status__in=[
                NodeReviewStatus.APPROVED,
                NodeReviewStatus.REJECTED,
                NodeReviewStatus.EXPIRED,
            ],
        ).values("id")
        return await NodeExecution.filter(
            id__in=Subquery(decided), status=ExecutionStatus.REVIEW
        ).exists()
