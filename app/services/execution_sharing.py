"""Sharing an execution read-only through a token (§7): create, revoke, read."""

from __future__ import annotations

import uuid

from app.errors import not_found
from app.models import Execution, Graph
from app.services.execution_outputs import with_current_outputs
from app.services.executions import get_execution
from app.services.graph_validation import parse_uuid


async def share_execution(user_id: uuid.UUID, execution_id: str) -> Execution:
    execution = await get_execution(user_id, execution_id)
    if execution is None:
        raise not_found("Execution")
    if execution.share_token is None:
        execution.share_token = uuid.uuid4()
        await execution.save(update_fields=["share_token"])
    return execution


async def unshare_execution(user_id: uuid.UUID, execution_id: str) -> Execution:
    execution = await get_execution(user_id, execution_id)
    if execution is None:
        raise not_found("Execution")
    execution.share_token = None
    await execution.save(update_fields=["share_token"])
    return execution


async def shared_execution(share_token: str) -> tuple[Execution, Graph | None] | None:
    token = parse_uuid(share_token)
    if token is None:
        return None
    execution = await Execution.get_or_none(share_token=token, is_deleted=False)
    if execution is None:
        return None
    await with_current_outputs([execution])
    graph = await Graph.get_or_none(graph_id=execution.graph_id, version=execution.graph_version)
    return execution, graph
