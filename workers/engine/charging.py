"""What a node run costs and when it is charged (SEMANTICS.md §7).

Before it starts: the minimum of its after-run cost is reserved (the run starts
only if the available balance covers it), then its RUN/BYTE cost is charged.
After it ends (or is stopped): its after-run cost for the seconds it ran, in
the transaction that drops the reservation; that charge may take the balance
below zero only by what the node used beyond its reserved minimum. Charges are
keyed by the node execution id, so a resumed or repeated run is charged once.
"""

from __future__ import annotations

from typing import Any

from app.blocks.base import Block
from app.blocks.costs import cost_after_run, cost_before_run
from app.models import CreditTransactionType, Execution
from app.services import ledger
from app.services.ledger import RunTimeCharge
from workers.engine.context import EngineContext
from workers.engine.credit_budget import CreditBudget
from workers.engine.rows import NodeRow


def time_key(row: NodeRow) -> str:
    return f"{row.id}:time"


def after_run_minimum(block: Block, input_data: dict[str, Any]) -> int:
    """An after-run cost is at least one second's worth once the node ran."""
    return cost_after_run(block.costs, input_data, 1.0)


class Charger:
    def __init__(
        self, engine: EngineContext, execution: Execution, budget: CreditBudget | None = None
    ) -> None:
        self.engine = engine
        self.execution = execution
        self.user_id = execution.user_id  # type: ignore[attr-defined]
        # The run's maxCredits, shared with its sub-graph runs (credit_budget.py).
        self.budget = budget

    async def before(self, row: NodeRow, block: Block) -> int:
        """Reserve, then charge up front; INSUFFICIENT_CREDITS when not covered,
        BudgetExceeded (nothing charged) when the run's budget cannot cover it."""
        minimum = after_run_minimum(block, row.input_data)
        cost = cost_before_run(block.costs, row.input_data)
        budget = self.budget
        up_front = budget.take(row.id, str(row.id), cost, minimum) if budget else 0
        try:
            return await self._before(row, block, minimum, cost)
        except BaseException:
            if budget is not None:
                budget.undo(row.id, up_front)
            raise

    async def _before(self, row: NodeRow, block: Block, minimum: int, cost: int) -> int:
        if minimum:
            await ledger.reserve(self.user_id, time_key(row), minimum, self.execution.id)
        if cost == 0:
            return 0
        try:
            entry = await ledger.record_transaction(
                self.user_id,
                -cost,
                CreditTransactionType.USAGE,
                str(row.id),
                description=f"{block.name} run",
                usage_graph_id=self.execution.graph_id,
                usage_execution_id=self.execution.id,
                usage_node_count=1,
            )
        except BaseException:
            if minimum:
                await ledger.release(self.user_id, time_key(row))
            raise
        if entry.created:
            await self.engine.after_charge(
                self.user_id, entry.transaction.running_balance, cost, entry.transaction.key
            )
        return cost

    def run_time_charge(self, row: NodeRow, block: Block, seconds: float) -> RunTimeCharge | None:
        """The after-run cost of `seconds` of run time, settled with the run's
        budget (within a budget: at most what the node held of it); None when
        there is neither a cost nor a hold to drop."""
        cost = cost_after_run(block.costs, row.input_data, seconds)
        if self.budget is not None:
            if time_key(row) in self.budget.charged_keys:
                self.budget.settle(row.id, 0)  # counted when the run was restored
            else:
                cost = self.budget.settle(row.id, cost)
        if cost == 0 and not after_run_minimum(block, row.input_data):
            return None
        return RunTimeCharge(
            key=time_key(row),
            amount=cost,
            description=f"{block.name} run time",
            graph_id=self.execution.graph_id,
            execution_id=self.execution.id,
        )

    async def after(self, row: NodeRow, block: Block, seconds: float) -> int:
        """The after-run cost of `seconds` of run time, releasing the reservation."""
        charge = self.run_time_charge(row, block, seconds)
        if charge is None:
            return 0
        if charge.amount == 0:
            await ledger.release(self.user_id, charge.key)
            return 0
        # Time already spent is owed even past zero.
        entry = await ledger.record_transaction(
            self.user_id,
            -charge.amount,
            CreditTransactionType.USAGE,
            charge.key,
            allow_negative=True,
            release_reservation=charge.key,
            description=charge.description,
            usage_graph_id=charge.graph_id,
            usage_execution_id=charge.execution_id,
        )
        if entry.created:
            await self.engine.after_charge(
                self.user_id, entry.transaction.running_balance, charge.amount, charge.key
            )
        return -entry.transaction.amount
