"""Human review meets fair concurrency (issue 15): a run waiting in REVIEW gives its
slot back, so once it is decided it must win a slot again like any queued run;
otherwise a user at MAX_RUNNING_EXECUTIONS_PER_USER has one run more than the cap."""

from __future__ import annotations

import asyncio

from arq.constants import result_key_prefix

from app.clients.redis import arq_job_id
from app.models import Execution, ExecutionStatus
from app.settings import get_settings
from tests.execution_helpers import execute, wait_for_end, wait_for_status
from tests.graph_builders import create_graph, link, node
from tests.test_fair_concurrency import STOP, fair_stack, seen, waiting_graph

ASKS = {
    "name": "asks a person",
    "nodes": [
        node("in", "AgentInput", name="draft", type="string"),
        node("ask", "HumanReview", message="Send this?"),
        node("yes", "AgentOutput", name="sent"),
    ],
    "links": [link("in", "result", "ask", "data"), link("ask", "approved", "yes", "value")],
}
REVIEWS = "query($id: ID!) { execution(id: $id) { status pendingReviews { id } } }"
DECIDE = """mutation($id: ID!) { reviewNode(nodeExecutionId: $id, approve: true) { status } }"""


async def resume_job_ended(stack, execution_id: str, review_id: str, timeout: float = 30) -> None:
    """The decision's resume job has been worked (arq keeps its result)."""
    settings = get_settings().model_copy(update={"REDIS_PREFIX": stack.extra_env["REDIS_PREFIX"]})
    key = result_key_prefix + arq_job_id(settings, "run", f"{execution_id}:review:{review_id}")
    redis = stack.redis()
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while not await redis.exists(key):
            assert asyncio.get_running_loop().time() < deadline, "the resume job never ran"
            await asyncio.sleep(0.05)
    finally:
        await redis.aclose()


async def test_a_decided_run_waits_for_a_slot_when_its_user_is_at_the_cap(database, new_user):
    async with fair_stack(cap=1, worker_runs=4) as stack:
        person = new_user()
        await seen(stack, person)
        asks = await create_graph(stack.gql, person, ASKS)
        slow = await create_graph(stack.gql, person, waiting_graph(60))
        worker = stack.worker()
        await worker.start()
        try:
            asking = (await execute(stack.gql, person, asks["id"], {"draft": "hi"}))["id"]
            await wait_for_status(stack.gql, person, asking, {"REVIEW"})
            # The waiting run holds no slot: the user's next run takes it.
            waiting = (await execute(stack.gql, person, slow["id"]))["id"]
            await wait_for_status(stack.gql, person, waiting, {"RUNNING"})
            got = await stack.gql.ok(REVIEWS, {"id": asking}, token=person.token)
            [review] = got["execution"]["pendingReviews"]
            await stack.gql.ok(DECIDE, {"id": review["id"]}, token=person.token)

            # Its resume job found the user at the cap: the run goes on waiting.
            await resume_job_ended(stack, asking, review["id"])
            assert (await Execution.get(id=asking)).status == ExecutionStatus.REVIEW
            assert (await Execution.get(id=waiting)).status == ExecutionStatus.RUNNING

            # The slot frees: the decided run resumes and completes.
            await stack.gql.ok(STOP, {"id": waiting}, token=person.token)
            done = await wait_for_end(stack.gql, person, asking)
            assert done["status"] == "COMPLETED" and done["outputs"] == {"sent": ["hi"]}
        finally:
            await worker.stop()
        rows = {row.id: row for row in await Execution.filter(id__in=[asking, waiting])}
        # Never two at once: the resumed run ended after the other one was stopped.
        stopped = rows[next(r for r in rows if str(r) == waiting)]
        resumed = rows[next(r for r in rows if str(r) == asking)]
        assert stopped.status == ExecutionStatus.TERMINATED
        assert resumed.ended_at >= stopped.ended_at


async def test_a_decision_inside_a_sub_graph_run_waits_for_the_parents_slot(database, new_user):
    async with fair_stack(cap=1, worker_runs=4) as stack:
        person = new_user()
        await seen(stack, person)
        child = await create_graph(stack.gql, person, ASKS)
        parent = await create_graph(
            stack.gql,
            person,
            {
                "name": "parent",
                "nodes": [
                    node(
                        "sub",
                        "SubGraph",
                        graph_id=child["id"],
                        graph_version=1,
                        inputs={"draft": "deep"},
                    ),
                    node("out", "AgentOutput", name="final"),
                ],
                "links": [link("sub", "sent", "out", "value")],
            },
        )
        slow = await create_graph(stack.gql, person, waiting_graph(60))
        worker = stack.worker()
        await worker.start()
        try:
            asking = (await execute(stack.gql, person, parent["id"]))["id"]
            await wait_for_status(stack.gql, person, asking, {"REVIEW"})
            waiting = (await execute(stack.gql, person, slow["id"]))["id"]
            await wait_for_status(stack.gql, person, waiting, {"RUNNING"})
            got = await stack.gql.ok(REVIEWS, {"id": asking}, token=person.token)
            [review] = got["execution"]["pendingReviews"]
            await stack.gql.ok(DECIDE, {"id": review["id"]}, token=person.token)
            await resume_job_ended(stack, asking, review["id"])
            assert (await Execution.get(id=asking)).status == ExecutionStatus.REVIEW

            await stack.gql.ok(STOP, {"id": waiting}, token=person.token)
            done = await wait_for_end(stack.gql, person, asking)
            assert done["status"] == "COMPLETED" and done["outputs"] == {"final": ["deep"]}
        finally:
            await worker.stop()


async def test_stopping_a_decided_run_that_waits_for_a_slot_ends_it(database, new_user):
    async with fair_stack(cap=1, worker_runs=4) as stack:
        person = new_user()
        await seen(stack, person)
        asks = await create_graph(stack.gql, person, ASKS)
        slow = await create_graph(stack.gql, person, waiting_graph(60))
        worker = stack.worker()
        await worker.start()
        try:
            asking = (await execute(stack.gql, person, asks["id"], {"draft": "hi"}))["id"]
            await wait_for_status(stack.gql, person, asking, {"REVIEW"})
            waiting = (await execute(stack.gql, person, slow["id"]))["id"]
            await wait_for_status(stack.gql, person, waiting, {"RUNNING"})
            got = await stack.gql.ok(REVIEWS, {"id": asking}, token=person.token)
            [review] = got["execution"]["pendingReviews"]
            await stack.gql.ok(DECIDE, {"id": review["id"]}, token=person.token)
            await resume_job_ended(stack, asking, review["id"])
            # A stop needs no slot.
            await stack.gql.ok(STOP, {"id": asking}, token=person.token)
            assert (await wait_for_end(stack.gql, person, asking))["status"] == "TERMINATED"
            assert (await Execution.get(id=waiting)).status == ExecutionStatus.RUNNING
            await stack.gql.ok(STOP, {"id": waiting}, token=person.token)
            assert (await wait_for_end(stack.gql, person, waiting))["status"] == "TERMINATED"
        finally:
            await worker.stop()
