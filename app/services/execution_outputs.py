"""A run's outputs: what its AgentOutput nodes recorded.

While a run goes on they are read from its node executions, in completion
order, rather than kept on the execution: appending each value to a stored
list would rewrite the whole list per value (quadratic for ForEach ->
AgentOutput). The run writes the final outputs once, at its end.
"""

from __future__ import annotations

import uuid
from typing import Any

from app.blocks.registry import block_by_name
from app.models import TERMINAL_STATUSES, Execution, ExecutionStatus, NodeExecution


async def execution_outputs(execution_id: uuid.UUID) -> dict[str, list[Any]]:
    """The run's outputs as its AgentOutput nodes recorded them, in completion
    order. Read from the node executions rather than kept on the execution while
    it runs, so no value ever rewrites the values before it."""
    return (await outputs_by_execution([execution_id]))[execution_id]


async def outputs_by_execution(
    execution_ids: list[uuid.UUID],
) -> dict[uuid.UUID, dict[str, list[Any]]]:
    """execution_outputs of several runs (a family ending together), in one query."""
    agent_output = block_by_name("AgentOutput")
    rows = (
        await NodeExecution.filter(
            execution_id__in=execution_ids,
            block_id=agent_output.id if agent_output else None,
            status__in=[ExecutionStatus.COMPLETED, ExecutionStatus.FAILED],
        )
        .order_by("ended_at", "arrival")
        .values_list("execution_id", "input_data", "output_data")
    )
    outputs: dict[uuid.UUID, dict[str, list[Any]]] = {eid: {} for eid in execution_ids}
    for execution_id, inputs, produced in rows:
        name = (inputs or {}).get("name")
        values = (produced or {}).get("output")
        if isinstance(name, str) and values:
            outputs[execution_id].setdefault(name, []).extend(values)
    return outputs


async def with_current_outputs(executions: list[Execution]) -> list[Execution]:
    """Executions still running get the outputs recorded so far (an ended one
    carries its final outputs)."""
    for execution in executions:
        if execution.status not in TERMINAL_STATUSES:
            execution.outputs = await execution_outputs(execution.id)
    return executions
