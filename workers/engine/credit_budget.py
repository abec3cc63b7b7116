"""A run's budget (executeGraph's maxCredits): credits it may still be charged,
shared by its sub-graph runs like RunBudget.

Every charge is taken from the budget before it is made, so the run ends FAILED
with "Budget exceeded" before the charge that would pass it, and that charge is
never made. Post-paid (per-second) costs hold the budget too: a node with one
holds a second's worth when it starts and one more second each time it has run
through what it holds; when the budget has none left the node is stopped and
charged what it held, which is what the budget allowed. A node that ran past
what it held (its worker stalled, so the watch came late) is charged its run
time as far as the budget has room.

One runner works on a run at a time (ownership.py), so the accounting lives in
that runner's memory; a resumed run starts from what the ledger says its family
of executions was charged.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable

from app.models import CreditTransaction, CreditTransactionType
from workers.engine.limits import RunLimitReached

BUDGET_EXCEEDED = "Budget exceeded"
# A post-paid node is stopped this long past the seconds it holds: run time is
# charged rounded to whole seconds, so until then it owes no more than it holds.
_ROUNDING_GRACE = 0.5


class BudgetExceeded(RunLimitReached):
    """Ends the whole run (its root) FAILED before the charge that would pass its budget."""


class CreditBudget:
    def __init__(self, limit: int, spent: int = 0, charged_keys: set[str] | None = None) -> None:
        self.limit = limit
        # Charged, or held for a running node's run time.
        self.committed = spent
        # Charges the ledger already has (a resumed run): made once, counted once.
        self.charged_keys = charged_keys or set()
        self.held: dict[uuid.UUID, int] = {}

    @classmethod
    async def restore(cls, limit: int, execution_ids: list[uuid.UUID]) -> CreditBudget:
        rows = await CreditTransaction.filter(
            usage_execution_id__in=execution_ids, type=CreditTransactionType.USAGE
        ).values_list("key", "amount")
        return cls(limit, -sum(amount for _, amount in rows), {key for key, _ in rows})

    def _exceeded(self, amount: int) -> BudgetExceeded:
        return BudgetExceeded(
            f"{BUDGET_EXCEEDED}: the next charge of {amount} credit(s) would take this run "
            f"past its maxCredits of {self.limit} ({self.committed} used or held)"
        )

    def fits(self, amount: int) -> bool:
        return self.committed + amount <= self.limit

    def take(self, node_execution_id: uuid.UUID, key: str, cost: int, minimum: int) -> int:
        """Before a node starts: its up-front cost (unless the ledger already has it)
        and the first second of its run-time cost, or BudgetExceeded with nothing
        taken. Returns the up-front part taken, for `undo`."""
        up_front = 0 if key in self.charged_keys else cost
        if not self.fits(up_front + minimum):
            raise self._exceeded(up_front + minimum)
        self.committed += up_front + minimum
        if minimum:
            self.held[node_execution_id] = minimum
        return up_front

    def undo(self, node_execution_id: uuid.UUID, up_front: int) -> None:
        """The charge `take` made room for was not made."""
        self.committed -= up_front + self.held.pop(node_execution_id, 0)

    def extend(self, node_execution_id: uuid.UUID, amount: int) -> bool:
        if not self.fits(amount):
            return False
        self.committed += amount
        self.held[node_execution_id] += amount
        return True

    def settle(self, node_execution_id: uuid.UUID, cost: int) -> int:
        """A post-paid node's run-time cost: what it held, and what it ran past that
        (its worker stalled, so the budget's watch ran late) as far as the budget
        has room; what it held beyond its cost goes back."""
        held = self.held.pop(node_execution_id, None)
        if held is None:
            return cost
        cost = min(cost, held + max(0, self.limit - self.committed))
        self.committed += cost - held
        return cost

    async def run_within(
        self,
        node_execution_id: uuid.UUID,
        per_second: int,
        started: float,
        work: Awaitable[None],
    ) -> None:
        """Runs a post-paid node's work while the budget pays for its seconds;
        BudgetExceeded (the work cancelled) when it no longer can."""
        task = asyncio.ensure_future(work)
        try:
            while True:
                seconds_held = self.held.get(node_execution_id, 0) // per_second
                wait = started + seconds_held + _ROUNDING_GRACE - time.monotonic()
                done, _ = await asyncio.wait({task}, timeout=max(0.0, wait))
                if done:
                    return task.result()
                if not self.extend(node_execution_id, per_second):
                    raise self._exceeded(per_second)
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
