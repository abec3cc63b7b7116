"""Starting runs and waiting for them, as a client would."""

from __future__ import annotations

import asyncio

EXECUTE = """mutation($id: ID!, $inputs: JSON!, $v: Int, $s: GraphSource) {
  executeGraph(graphId: $id, inputs: $inputs, version: $v, source: $s) { id status graphId
    graphVersion inputs createdAt } }"""
EXECUTION_FIELDS = """id status graphId graphVersion inputs outputs createdAt startedAt endedAt
  isShared shareToken source
  stats { cost durationSeconds nodeRunSeconds nodeCount nodeErrorCount activitySummary
          correctnessScore error }
  nodeExecutions { id nodeId blockId status inputData outputData queuedAt startedAt endedAt
                   error }"""
GET_EXECUTION = f"query($id: ID!) {{ execution(id: $id) {{ {EXECUTION_FIELDS} }} }}"
TERMINAL = {"COMPLETED", "FAILED", "TERMINATED"}


async def execute(gql, user, graph_id, inputs=None, **kw):
    variables = {"id": graph_id, "inputs": inputs or {}, **kw}
    return (await gql.ok(EXECUTE, variables, token=user.token))["executeGraph"]


async def wait_for_end(gql, user, execution_id, timeout: float = 30.0) -> dict:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        execution = (await gql.ok(GET_EXECUTION, {"id": execution_id}, token=user.token))[
            "execution"
        ]
        if execution["status"] in TERMINAL:
            return execution
        assert asyncio.get_running_loop().time() < deadline, execution
        await asyncio.sleep(0.05)


async def wait_for_status(gql, user, execution_id, statuses, timeout: float = 30.0) -> dict:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        execution = (await gql.ok(GET_EXECUTION, {"id": execution_id}, token=user.token))[
            "execution"
        ]
        if execution["status"] in statuses:
            return execution
        assert asyncio.get_running_loop().time() < deadline, execution
        await asyncio.sleep(0.05)
