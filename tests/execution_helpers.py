"""Starting runs and waiting for them, as a client would."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

from tests.harness import ApiServer, GraphQLClient, WorkerProcess

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


async def wait_for_node(gql, user, execution_id, node_id, statuses, timeout: float = 30.0) -> dict:
    """The execution once a run of `node_id` has one of `statuses`."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        execution = (await gql.ok(GET_EXECUTION, {"id": execution_id}, token=user.token))[
            "execution"
        ]
        if any(
            n["nodeId"] == node_id and n["status"] in statuses for n in execution["nodeExecutions"]
        ):
            return execution
        assert execution["status"] not in TERMINAL, execution
        assert asyncio.get_running_loop().time() < deadline, execution
        await asyncio.sleep(0.05)


class OwnStack:
    """An API process with workers of its own: a Redis prefix below the run's (so
    the run's clean-up removes it) gives them their own arq queue, event streams
    and counters, apart from the session's worker. A test can then leave
    executions queued, choose which worker runs a job, and count exactly."""

    def __init__(self, env: dict[str, str], name: str) -> None:
        self.env = env
        self.extra_env = {"REDIS_PREFIX": f"{env['REDIS_PREFIX']}{name}-{uuid.uuid4().hex[:8]}:"}
        self.api = ApiServer(env, extra_env=self.extra_env)
        self.gql = GraphQLClient(self.api.base_url)

    async def start(self) -> None:
        await self.api.start()

    async def stop(self) -> None:
        await self.gql.aclose()
        await self.api.stop()

    def worker(self) -> WorkerProcess:
        """A worker on this stack's queue (not started)."""
        return WorkerProcess(self.env, extra_env=self.extra_env)

    def redis(self):
        """A Redis client (close it with aclose)."""
        from redis.asyncio import Redis

        return Redis.from_url(self.env["REDIS_URL"])

    async def metrics(self) -> str:
        async with httpx.AsyncClient() as client:
            response = await client.get(self.api.base_url + "/metrics")
        assert response.status_code == 200
        return response.text


def metric_values(text: str, name: str) -> dict[str, float]:
    """Prometheus text -> {label string: value} for one metric name."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        metric, _, value = line.rpartition(" ")
        base, _, labels = metric.partition("{")
        if base == name:
            values[labels.rstrip("}")] = float(value)
    return values


@asynccontextmanager
async def stack_with_worker(env: dict[str, str], name: str) -> AsyncIterator[OwnStack]:
    """An OwnStack with one worker (`worker_process`, which a test may replace)."""
    own = OwnStack(env, name)
    await own.start()
    worker = own.worker()
    await worker.start()
    own.worker_process = worker
    try:
        yield own
    finally:
        await own.worker_process.stop()
        await own.stop()


async def granted_user(stack: OwnStack, new_user, credits: int):
    """A user the API has seen once, granted `credits`."""
    from app.models import CreditTransactionType
    from app.services import ledger

    person = new_user()
    await stack.gql.ok("{ me { id } }", token=person.token)
    await ledger.record_transaction(
        person.id, credits, CreditTransactionType.GRANT, f"grant:{person.id}"
    )
    return person
