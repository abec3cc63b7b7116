"""A run and the sub-graph runs below it: its family, read level by level (a
family is at most MAX_SUBGRAPH_DEPTH levels deep, so a few queries)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from app.models import Execution, ExecutionStatus


@dataclass(frozen=True, slots=True)
class FamilyMember:
    id: uuid.UUID
    parent_id: uuid.UUID | None
    status: ExecutionStatus
    # The runs above it, nearest first (its node events roll up to them).
    ancestors: tuple[uuid.UUID, ...]


async def family_of(execution_id: uuid.UUID) -> list[FamilyMember]:
    """The execution and every sub-graph run below it, each level after the one above."""
    root = await Execution.filter(id=execution_id).values_list("status", flat=True)
    if not root:
        return []
    found = [FamilyMember(execution_id, None, ExecutionStatus(root[0]), ())]
    frontier = {execution_id: found[0]}
    while frontier:
        rows = await Execution.filter(parent_execution_id__in=list(frontier)).values_list(
            "id", "parent_execution_id", "status"
        )
        level = {}
        for child_id, parent_id, status in rows:
            parent = frontier[parent_id]
            level[child_id] = FamilyMember(
                child_id, parent_id, ExecutionStatus(status), (parent_id, *parent.ancestors)
            )
        found.extend(level.values())
        frontier = level
    return found


async def descendant_ids(execution_id: uuid.UUID) -> list[uuid.UUID]:
    """This execution and every sub-graph execution below it."""
    return [member.id for member in await family_of(execution_id)] or [execution_id]
