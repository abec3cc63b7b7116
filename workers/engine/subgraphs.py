"""SubGraph nodes: a child execution run inside its parent's job.

A child's id follows from the node execution that runs it, so a resumed SubGraph
node resumes the same child instead of starting another. Its depth below the
root is checked at run time, whatever the graph id came from (a default or a
linked value), so a graph that runs itself ends at MAX_SUBGRAPH_DEPTH.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from tortoise.exceptions import IntegrityError

from app.blocks.base import BlockError
from app.models import Execution, ExecutionStatus
from app.services.executions import publish_status
from app.services.graphs import get_graph
from workers.engine.limits import RunLimitReached, check_depth
from workers.engine.ownership import LostOwnership
from workers.engine.rows import NodeRow

_CHILD_NAMESPACE = uuid.UUID("6f4c2f0e-8a51-4d7e-9a55-0f8f5b9e3c21")


class SubGraphFailure(Exception):
    """The child run failed outside any block (the database, Redis): the whole job
    retries and resumes, child included, instead of failing the SubGraph node."""


class ChildAwaitsReview(Exception):
    """The child run waits for a person: its SubGraph node waits with it (node_run.py)."""


def sub_graph_runner(
    parent: Execution,
    row: NodeRow,
    depth: int,
    max_depth: int,
    publisher: Any,
    run_child: Callable[[Execution], Awaitable[ExecutionStatus]],
):
    async def run_sub_graph(
        graph_id: str, version: int, inputs: dict[str, Any]
    ) -> AsyncIterator[tuple[str, Any]]:
        check_depth(depth + 1, max_depth)
        child = await child_execution(parent, row, graph_id, version, inputs, publisher)
        try:
            status = await run_child(child)
        except (asyncio.CancelledError, RunLimitReached, LostOwnership, BlockError):
            raise
        except Exception as exc:
            raise SubGraphFailure(f"sub-graph run {child.id} failed: {exc!r}") from exc
        if status == ExecutionStatus.REVIEW:
            raise ChildAwaitsReview(str(child.id))
        if status != ExecutionStatus.COMPLETED:
            reason = child.error or ""
            if reason.startswith("sub-graph run "):
                raise BlockError(reason)  # a failure deeper down, already explained
            raise BlockError(f"sub-graph run {status.lower()}: {reason}".strip())
        for name, values in (child.outputs or {}).items():
            for value in values:
                yield name, value

    return run_sub_graph


async def child_execution(
    parent: Execution,
    row: NodeRow,
    graph_id: str,
    version: int,
    inputs: dict[str, Any],
    publisher: Any,
) -> Execution:
    child_id = uuid.uuid5(_CHILD_NAMESPACE, str(row.id))
    existing = await Execution.get_or_none(id=child_id)
    if existing is not None:
        return existing
    try:
        wanted = uuid.UUID(str(graph_id))
    except ValueError:
        raise BlockError(f"graph_id {str(graph_id)[:100]!r} is not a graph id") from None
    user_id = parent.user_id  # type: ignore[attr-defined]
    # The runner's own graphs, or versions a store agent in their library grants.
    graph = await get_graph(user_id, str(wanted), version)
    if graph is None:
        raise BlockError(f"no graph {graph_id} version {version} of yours")
    try:
        child = await Execution.create(
            id=child_id,
            user_id=user_id,
            graph_id=graph.graph_id,
            graph_version=graph.version,
            status=ExecutionStatus.QUEUED,
            source=parent.source,
            inputs=inputs,
            credentials_inputs=parent.credentials_inputs,
            parent_execution_id=parent.id,
            parent_node_execution_id=row.id,
        )
    except IntegrityError:
        return await Execution.get(id=child_id)
    await publish_status(publisher, child)
    return child
