"""Human review (issue 15): nodes that wait for a person, in real processes.

A graph with humanInTheLoopSafeMode on waits before each node of a sensitive
block (here HttpRequest, against a local HTTP stand-in); a HumanReview node
always waits. A waiting run is REVIEW, holds no worker, and resumes where it
stopped once someone decides, on whichever worker takes the job.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from arq.constants import result_key_prefix

from app.blocks.registry import block_by_name
from app.clients.redis import create_redis
from app.clock import utcnow
from app.events import EventPublisher
from app.models import CreditTransaction, NodeReview
from app.services.reviews import ReviewServices, expire_reviews, requeue_decided_runs
from app.settings import get_settings
from tests.conftest import TEST_ENV
from tests.execution_helpers import (
    OwnStack,
    execute,
    stack_with_worker,
    wait_for_end,
    wait_for_status,
)
from tests.graph_builders import create_graph, link, node, node_ids
from tests.harness import graphql_ws

SAFE_MODE = """mutation($id: ID!, $on: Boolean) {
  updateGraphSettings(id: $id, settings: {humanInTheLoopSafeMode: $on}) {
    humanInTheLoopSafeMode } }"""
REVIEW_FIELDS = """id nodeExecutionId executionId graphId graphVersion nodeId blockId kind status
  data message reviewedData reviewMessage createdAt expiresAt decidedAt"""
REVIEW = f"""mutation($id: ID!, $approve: Boolean!, $data: JSON, $message: String) {{
  reviewNode(nodeExecutionId: $id, approve: $approve, data: $data, message: $message) {{
    {REVIEW_FIELDS} }} }}"""
PENDING = f"""query($first: Int, $after: String, $graphId: ID) {{
  pendingReviews(first: $first, after: $after, graphId: $graphId) {{
    edges {{ cursor node {{ {REVIEW_FIELDS} }} }} pageInfo {{ hasNextPage endCursor }}
    totalCount }} }}"""
EXECUTION_REVIEWS = """query($id: ID!) { execution(id: $id) { id status
  pendingReviews { id status kind data }
  nodeExecutions { id nodeId status inputData outputData error } } }"""
EVENTS = """subscription($id: ID!) { executionEvents(executionId: $id) {
  __typename
  ... on ExecutionStatusEvent { seq execution { id status } }
  ... on NodeExecutionEvent { seq nodeExecution { id nodeId status } }
  ... on NodeReviewEvent { seq executionId review { id status kind data reviewedData } } } }"""
STOP = "mutation($id: ID!) { stopExecution(id: $id) { id status } }"


class _Recorder(BaseHTTPRequestHandler):
    """The outside world HttpRequest reaches: records each path it is asked for."""

    seen: list[str] = []

    def do_GET(self) -> None:
        type(self).seen.append(self.path)
        body = b'{"path": "%s"}' % self.path.encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def outside() -> AsyncIterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()


def _url(server: ThreadingHTTPServer, path: str) -> str:
    return f"http://127.0.0.1:{server.server_port}{path}"


ENV = {**TEST_ENV, "ALLOW_PRIVATE_HTTP": "true", "ONBOARDING_REWARDS": "{}"}


@pytest.fixture(scope="module")
async def stack(database) -> AsyncIterator[OwnStack]:
    async with stack_with_worker(ENV, "review") as own:
        yield own


def fetch_graph(server: ThreadingHTTPServer, path: str) -> dict:
    return {
        "name": "fetches",
        "nodes": [
            node("get", "HttpRequest", url=_url(server, path)),
            node("out", "AgentOutput", name="body"),
        ],
        "links": [link("get", "response", "out", "value")],
    }


REVIEWED_GRAPH = {
    "name": "asks a person",
    "nodes": [
        node("in", "AgentInput", name="draft", type="string"),
        node("ask", "HumanReview", message="Send this?"),
        node("yes", "AgentOutput", name="sent"),
        node("no", "AgentOutput", name="refused"),
    ],
    "links": [
        link("in", "result", "ask", "data"),
        link("ask", "approved", "yes", "value"),
        link("ask", "rejected", "no", "value"),
    ],
}


async def safe_graph(gql, user, spec: dict) -> dict:
    graph = await create_graph(gql, user, spec)
    await gql.ok(SAFE_MODE, {"id": graph["id"], "on": True}, token=user.token)
    return graph


async def wait_for_review(gql, user, execution_id: str) -> dict:
    """The execution once it waits in REVIEW with a pending review."""
    execution = await wait_for_status(gql, user, execution_id, {"REVIEW"})
    assert execution["status"] == "REVIEW"
    got = await gql.ok(EXECUTION_REVIEWS, {"id": execution_id}, token=user.token)
    assert got["execution"]["pendingReviews"], got
    return got["execution"]


async def credits(gql, user) -> int:
    return (await gql.ok("{ me { credits } }", token=user.token))["me"]["credits"]


async def collect(ws, execution_id: str) -> list[dict]:
    op_id = await ws.subscribe(EVENTS, {"id": execution_id})
    events = []
    async for message in ws.results(op_id, timeout=60):
        assert message["type"] in ("next", "complete"), message
        if message["type"] == "next":
            events.append(message["payload"]["data"]["executionEvents"])
    return events


async def test_safe_mode_run_waits_frees_its_worker_and_resumes_elsewhere_with_edits(
    database, new_user, outside
):
    """The issue's proof: two workers; the one that ran the graph up to the review
    is killed while the run waits; approval with edited inputs resumes it on the
    other one, which requests the edited URL only."""
    stack = OwnStack(ENV, "review-kill")
    await stack.start()
    gql = stack.gql
    user = new_user()
    first, second = stack.worker(), stack.worker()
    try:
        await gql.ok("{ me { id } }", token=user.token)
        spec = fetch_graph(outside, "/as-drawn")
        graph = await safe_graph(gql, user, spec)
        ids = node_ids(spec, graph)
        before = await credits(gql, user)
        await first.start()
        async with graphql_ws(stack.api.ws_url, {"Authorization": f"Bearer {user.token}"}) as ws:
            started = await execute(gql, user, graph["id"])
            events_task = asyncio.create_task(collect(ws, started["id"]))
            waiting = await wait_for_review(gql, user, started["id"])
            [review] = waiting["pendingReviews"]
            assert review["kind"] == "SENSITIVE_NODE"
            assert review["data"]["url"] == _url(outside, "/as-drawn")
            [fetch] = [n for n in waiting["nodeExecutions"] if n["nodeId"] == ids["get"]]
            assert fetch["status"] == "REVIEW" and review["id"] == fetch["id"]
            # The job gave its worker back: arq holds its result, nothing runs it.
            redis = stack.redis()
            try:
                job_id = f"{stack.extra_env['REDIS_PREFIX']}run:{started['id']}"
                assert await redis.exists(result_key_prefix + job_id)
            finally:
                await redis.aclose()
            assert f"execution {started['id']} waits for review" in first.log()
            # Waiting costs nothing, and nothing reached the outside.
            assert await credits(gql, user) == before
            assert "/as-drawn" not in _Recorder.seen

            first.kill()
            await second.start()
            decided = await gql.ok(
                REVIEW,
                {"id": review["id"], "approve": True, "data": {"url": _url(outside, "/edited")}},
                token=user.token,
            )
            assert decided["reviewNode"]["status"] == "APPROVED"
            assert decided["reviewNode"]["reviewedData"]["url"] == _url(outside, "/edited")
            done = await wait_for_end(gql, user, started["id"], timeout=60)
            events = await events_task
    finally:
        first.kill()
        await second.stop()
        await stack.stop()

    assert done["status"] == "COMPLETED", done
    assert done["outputs"] == {"body": [{"path": "/edited"}]}
    assert "/as-drawn" not in _Recorder.seen and "/edited" in _Recorder.seen
    [fetch] = [n for n in done["nodeExecutions"] if n["nodeId"] == ids["get"]]
    assert fetch["inputData"]["url"] == _url(outside, "/edited")
    assert fetch["id"] == review["id"]
    assert f"resuming execution {started['id']}" in second.log()
    # Charged once, after approval.
    usage = await CreditTransaction.filter(usage_execution_id=started["id"])
    assert [t.key for t in usage] == [fetch["id"]]

    statuses = [e["execution"]["status"] for e in events if "execution" in e]
    assert "REVIEW" in statuses and statuses[-1] == "COMPLETED"
    review_events = [e["review"]["status"] for e in events if e["__typename"] == "NodeReviewEvent"]
    assert review_events == ["PENDING", "APPROVED"]
    seqs = [e["seq"] for e in events[1:]]
    assert seqs == sorted(set(seqs))


async def test_rejected_sensitive_node_fails_uncharged_and_twice_is_a_conflict(
    stack, new_user, outside
):
    gql = stack.gql
    user = new_user()
    await gql.ok("{ me { id } }", token=user.token)
    graph = await safe_graph(gql, user, fetch_graph(outside, "/never"))
    before = await credits(gql, user)
    started = await execute(gql, user, graph["id"])
    [review] = (await wait_for_review(gql, user, started["id"]))["pendingReviews"]
    # Turning safe mode off now does not let an asked-about node through.
    await gql.ok(SAFE_MODE, {"id": graph["id"], "on": False}, token=user.token)
    rejected = await gql.ok(
        REVIEW, {"id": review["id"], "approve": False, "message": "too risky"}, token=user.token
    )
    assert rejected["reviewNode"]["status"] == "REJECTED"
    assert rejected["reviewNode"]["reviewMessage"] == "too risky"
    done = await wait_for_end(gql, user, started["id"])
    assert done["status"] == "FAILED"
    [fetch] = done["nodeExecutions"]
    assert fetch["status"] == "FAILED" and fetch["error"] == "Rejected in review: too risky"
    assert fetch["outputData"] == {"error": ["Rejected in review: too risky"]}
    assert "/never" not in _Recorder.seen
    assert await credits(gql, user) == before
    # A second decision is refused and changes nothing.
    again = await gql.error(REVIEW, {"id": review["id"], "approve": True}, token=user.token)
    assert again["extensions"]["code"] == "CONFLICT"
    assert "already reviewed (REJECTED)" in again["message"]
    stored = await NodeReview.get(id=review["id"])
    assert stored.status == "REJECTED" and stored.review_message == "too risky"


async def test_human_review_block_approved_with_edited_data_or_rejected(stack, new_user):
    gql = stack.gql
    user = new_user()
    await gql.ok("{ me { id } }", token=user.token)
    # Safe mode is off: a HumanReview node waits all the same.
    graph = await create_graph(gql, user, REVIEWED_GRAPH)
    approved_run = await execute(gql, user, graph["id"], {"draft": "helo wrld"})
    rejected_run = await execute(gql, user, graph["id"], {"draft": "rude words"})
    [first] = (await wait_for_review(gql, user, approved_run["id"]))["pendingReviews"]
    [second] = (await wait_for_review(gql, user, rejected_run["id"]))["pendingReviews"]
    assert first["kind"] == "BLOCK" and first["data"] == "helo wrld"
    listed = await gql.ok(PENDING, {"graphId": graph["id"]}, token=user.token)
    edges = listed["pendingReviews"]["edges"]
    # Oldest first: whichever run reached its review first.
    assert {e["node"]["id"] for e in edges} == {first["id"], second["id"]}
    assert edges[0]["node"]["createdAt"] <= edges[1]["node"]["createdAt"]
    assert listed["pendingReviews"]["edges"][0]["node"]["message"] == "Send this?"

    await gql.ok(
        REVIEW, {"id": first["id"], "approve": True, "data": "hello world"}, token=user.token
    )
    await gql.ok(
        REVIEW, {"id": second["id"], "approve": False, "message": "not polite"}, token=user.token
    )
    done = await wait_for_end(gql, user, approved_run["id"])
    assert done["status"] == "COMPLETED" and done["outputs"] == {"sent": ["hello world"]}
    done = await wait_for_end(gql, user, rejected_run["id"])
    assert done["status"] == "COMPLETED" and done["outputs"] == {"refused": ["not polite"]}
    listed = await gql.ok(PENDING, {"graphId": graph["id"]}, token=user.token)
    assert listed["pendingReviews"]["totalCount"] == 0


async def test_unanswered_review_expires_as_rejected(stack, new_user):
    gql = stack.gql
    user = new_user()
    await gql.ok("{ me { id } }", token=user.token)
    graph = await create_graph(gql, user, REVIEWED_GRAPH)
    started = await execute(gql, user, graph["id"], {"draft": "anyone?"})
    [review] = (await wait_for_review(gql, user, started["id"]))["pendingReviews"]
    settings = get_settings().model_copy(update={"REDIS_PREFIX": stack.extra_env["REDIS_PREFIX"]})
    redis = create_redis(settings)
    services = ReviewServices(settings, redis, EventPublisher(redis, settings.REDIS_PREFIX))
    try:
        # Not yet due: nothing expires.
        assert await expire_reviews(services, utcnow()) == 0
        # The expiry job's run a little after REVIEW_TIMEOUT_HOURS (72): as rejected.
        later = utcnow() + timedelta(hours=72, minutes=1)
        # (Reviews other tests left waiting in this database expire with it.)
        assert await expire_reviews(services, later) >= 1
        assert await expire_reviews(services, later) == 0  # once
    finally:
        await redis.aclose()
    done = await wait_for_end(gql, user, started["id"])
    assert done["status"] == "COMPLETED"
    assert done["outputs"] == {"refused": ["Not reviewed within 72 hours"]}
    late = await gql.error(REVIEW, {"id": review["id"], "approve": True}, token=user.token)
    assert late["extensions"]["code"] == "CONFLICT"
    assert (await NodeReview.get(id=review["id"])).status == "EXPIRED"


async def test_stopping_a_waiting_run_terminates_it(stack, new_user, outside):
    gql = stack.gql
    user = new_user()
    await gql.ok("{ me { id } }", token=user.token)
    graph = await safe_graph(gql, user, fetch_graph(outside, "/stopped"))
    started = await execute(gql, user, graph["id"])
    [review] = (await wait_for_review(gql, user, started["id"]))["pendingReviews"]
    await gql.ok(STOP, {"id": started["id"]}, token=user.token)
    done = await wait_for_end(gql, user, started["id"])
    assert done["status"] == "TERMINATED"
    assert [n["status"] for n in done["nodeExecutions"]] == ["TERMINATED"]
    got = await gql.ok(EXECUTION_REVIEWS, {"id": started["id"]}, token=user.token)
    assert got["execution"]["pendingReviews"] == []
    assert (await NodeReview.get(id=review["id"])).status == "CANCELLED"
    late = await gql.error(REVIEW, {"id": review["id"], "approve": True}, token=user.token)
    assert late["extensions"]["code"] == "CONFLICT"
    assert "/stopped" not in _Recorder.seen


async def test_someone_elses_review_is_not_found_and_bad_decisions_change_nothing(
    stack, new_user, outside
):
    gql = stack.gql
    owner, stranger = new_user(), new_user()
    for person in (owner, stranger):
        await gql.ok("{ me { id } }", token=person.token)
    graph = await safe_graph(gql, owner, fetch_graph(outside, "/owned"))
    started = await execute(gql, owner, graph["id"])
    [review] = (await wait_for_review(gql, owner, started["id"]))["pendingReviews"]

    # Another user's node is exactly like an absent one.
    for node_id in (review["id"], str(uuid.uuid4()), "not-an-id"):
        assert (
            await gql.error_code(REVIEW, {"id": node_id, "approve": True}, token=stranger.token)
            == "NOT_FOUND"
        )
    theirs = await gql.ok(PENDING, {}, token=stranger.token)
    assert theirs["pendingReviews"] == {
        "edges": [],
        "pageInfo": {"hasNextPage": False, "endCursor": None},
        "totalCount": 0,
    }
    # Bad decisions: a clear code, and the review still waits.
    for variables in (
        {"approve": True, "data": "not an object"},
        {"approve": True, "data": {"no_such_pin": 1}},
        {"approve": True, "data": {"method": "TELEPORT"}},
        {"approve": False, "data": {"url": "http://example.com/"}},
        {"approve": False, "message": "x" * 2001},
    ):
        code = await gql.error_code(REVIEW, {"id": review["id"], **variables}, token=owner.token)
        assert code == "BAD_USER_INPUT", variables
    for variables in ({"first": 0}, {"first": 101}, {"after": "garbage"}):
        assert await gql.error_code(PENDING, variables, token=owner.token) == "BAD_USER_INPUT"
    assert (await NodeReview.get(id=review["id"])).status == "PENDING"
    still = await gql.ok(EXECUTION_REVIEWS, {"id": started["id"]}, token=owner.token)
    assert still["execution"]["status"] == "REVIEW"
    await gql.ok(REVIEW, {"id": review["id"], "approve": False}, token=owner.token)
    assert (await wait_for_end(gql, owner, started["id"]))["status"] == "FAILED"


async def test_api_keys_need_execute_graph_to_decide(stack, new_user):
    gql = stack.gql
    user = new_user()
    await gql.ok("{ me { id } }", token=user.token)

    async def key(*permissions: str) -> str:
        made = await gql.ok(
            'mutation($p: [ApiKeyPermission!]!) { createApiKey(input: {name: "k", '
            "permissions: $p}) { plainTextKey } }",
            {"p": list(permissions)},
            token=user.token,
        )
        return made["createApiKey"]["plainTextKey"]

    reader, executor = await key("READ_EXECUTION"), await key("EXECUTE_GRAPH")
    graph = await create_graph(gql, user, REVIEWED_GRAPH)
    started = await execute(gql, user, graph["id"], {"draft": "by key"})
    [review] = (await wait_for_review(gql, user, started["id"]))["pendingReviews"]
    listed = await gql.ok(PENDING, {}, api_key=reader)
    assert [e["node"]["id"] for e in listed["pendingReviews"]["edges"]] == [review["id"]]
    assert await gql.error_code(PENDING, {}, api_key=executor) == "FORBIDDEN"
    denied = await gql.error_code(REVIEW, {"id": review["id"], "approve": True}, api_key=reader)
    assert denied == "FORBIDDEN"
    assert (await NodeReview.get(id=review["id"])).status == "PENDING"
    decided = await gql.ok(
        "mutation($id: ID!) { reviewNode(nodeExecutionId: $id, approve: true) { id status } }",
        {"id": review["id"]},
        api_key=executor,
    )
    assert decided["reviewNode"]["status"] == "APPROVED"
    done = await wait_for_end(gql, user, started["id"])
    assert done["outputs"] == {"sent": ["by key"]}


async def test_pending_reviews_page_by_keyset(stack, new_user):
    gql = stack.gql
    user = new_user()
    await gql.ok("{ me { id } }", token=user.token)
    graph = await create_graph(gql, user, REVIEWED_GRAPH)
    runs = [await execute(gql, user, graph["id"], {"draft": f"d{i}"}) for i in range(5)]
    for run in runs:
        await wait_for_review(gql, user, run["id"])
    seen, after = [], None
    while True:
        page = (await gql.ok(PENDING, {"first": 2, "after": after}, token=user.token))[
            "pendingReviews"
        ]
        assert page["totalCount"] == 5
        seen += [e["node"]["data"] for e in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert sorted(seen) == [f"d{i}" for i in range(5)]
    assert len(seen) == 5
    for run in runs:
        await gql.ok(STOP, {"id": run["id"]}, token=user.token)


async def test_blocks_say_which_are_sensitive(stack, user):
    got = await stack.gql.ok("{ blocks { name sensitive } }", token=user.token)
    sensitive = {b["name"] for b in got["blocks"] if b["sensitive"]}
    # LLMCall is listed only where an LLM endpoint is set; the flag is the block's own.
    assert {"HttpRequest", "ReadFile", "SubGraph"} <= sensitive
    assert block_by_name("LLMCall").sensitive
    assert "HumanReview" not in sensitive and "StoreValue" not in sensitive


async def test_a_sub_graph_run_waits_inside_its_parent_and_resumes(stack, new_user, outside):
    """Safe mode reaches into sub-graph runs: the SubGraph node waits first, then the
    child's HttpRequest node; the parent waits with it and resumes the same child."""
    gql = stack.gql
    user = new_user()
    await gql.ok("{ me { id } }", token=user.token)
    child = await create_graph(gql, user, fetch_graph(outside, "/from-child"))
    parent_spec = {
        "name": "parent",
        "nodes": [
            node("sub", "SubGraph", graph_id=child["id"], graph_version=1, inputs={}),
            node("out", "AgentOutput", name="final"),
        ],
        "links": [link("sub", "body", "out", "value")],
    }
    parent = await safe_graph(gql, user, parent_spec)
    started = await execute(gql, user, parent["id"])
    [outer] = (await wait_for_review(gql, user, started["id"]))["pendingReviews"]
    assert outer["data"]["graph_id"] == child["id"]
    await gql.ok(REVIEW, {"id": outer["id"], "approve": True}, token=user.token)

    deadline = asyncio.get_running_loop().time() + 30
    while True:
        got = await gql.ok(EXECUTION_REVIEWS, {"id": started["id"]}, token=user.token)
        pending = got["execution"]["pendingReviews"]
        if got["execution"]["status"] == "REVIEW" and pending and pending[0]["id"] != outer["id"]:
            break
        assert asyncio.get_running_loop().time() < deadline, got
        await asyncio.sleep(0.05)
    [inner] = pending
    assert inner["kind"] == "SENSITIVE_NODE"
    assert inner["data"]["url"] == _url(outside, "/from-child")
    assert "/from-child" not in _Recorder.seen
    listed = await gql.ok(PENDING, {}, token=user.token)
    assert [e["node"]["id"] for e in listed["pendingReviews"]["edges"]] == [inner["id"]]

    await gql.ok(REVIEW, {"id": inner["id"], "approve": True}, token=user.token)
    done = await wait_for_end(gql, user, started["id"])
    assert done["status"] == "COMPLETED", done
    assert done["outputs"] == {"final": [{"path": "/from-child"}]}
    assert _Recorder.seen.count("/from-child") == 1


async def test_the_expiry_job_rejects_reviews_past_the_timeout(database, new_user):
    """The workers' expire_reviews job itself, on a stack whose timeout is about a
    third of a second: enqueued until it finds the review due (no sleep stands in)."""
    env = {**ENV, "REVIEW_TIMEOUT_HOURS": "0.0001"}
    stack = OwnStack(env, "review-expiry")
    await stack.start()
    worker = stack.worker()
    await worker.start()
    user = new_user()
    settings = get_settings().model_copy(update={"REDIS_PREFIX": stack.extra_env["REDIS_PREFIX"]})
    redis = create_redis(settings)
    try:
        gql = stack.gql
        await gql.ok("{ me { id } }", token=user.token)
        graph = await create_graph(gql, user, REVIEWED_GRAPH)
        started = await execute(gql, user, graph["id"], {"draft": "too late"})
        await wait_for_review(gql, user, started["id"])
        deadline = asyncio.get_running_loop().time() + 30
        while True:
            job = await redis.enqueue_job("expire_reviews", _job_id=f"expire-{uuid.uuid4()}")
            if await job.result(timeout=30) == 1:
                break
            assert asyncio.get_running_loop().time() < deadline
        done = await wait_for_end(gql, user, started["id"])
    finally:
        await redis.aclose()
        await worker.stop()
        await stack.stop()
    assert done["status"] == "COMPLETED"
    assert done["outputs"] == {"refused": ["Not reviewed within 0.0001 hours"]}


async def test_many_reviews_of_one_run_decided_at_once(stack, new_user):
    """A ForEach fans 40 items into one HumanReview node: 40 waiting runs of it,
    decided concurrently (some while the run still goes on); each decision is
    applied once and the run ends with all 40 answers."""
    gql = stack.gql
    user = new_user()
    await gql.ok("{ me { id } }", token=user.token)
    spec = {
        "name": "fan out to a person",
        "nodes": [
            node("in", "AgentInput", name="items", type="array"),
            node("each", "ForEach"),
            node("ask", "HumanReview", message="ok?"),
            node("yes", "AgentOutput", name="sent"),
            node("no", "AgentOutput", name="refused"),
        ],
        "links": [
            link("in", "result", "each", "items"),
            link("each", "item", "ask", "data"),
            link("ask", "approved", "yes", "value"),
            link("ask", "rejected", "no", "value"),
        ],
    }
    graph = await create_graph(gql, user, spec)
    items = list(range(40))
    started = await execute(gql, user, graph["id"], {"items": items})
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        got = await gql.ok(EXECUTION_REVIEWS, {"id": started["id"]}, token=user.token)
        if len(got["execution"]["pendingReviews"]) == len(items):
            break
        assert asyncio.get_running_loop().time() < deadline, got
        await asyncio.sleep(0.05)
    reviews = got["execution"]["pendingReviews"]

    async def decide(review: dict) -> dict:
        approve = review["data"] % 2 == 0
        variables = {"id": review["id"], "approve": approve}
        if not approve:
            variables["message"] = f"odd {review['data']}"
        return await gql.execute(REVIEW, variables, token=user.token)

    answers = await asyncio.gather(*(decide(r) for r in reviews + reviews[:5]))
    errors = [a["errors"][0]["extensions"]["code"] for a in answers if a.get("errors")]
    assert errors == ["CONFLICT"] * 5
    done = await wait_for_end(gql, user, started["id"], timeout=60)
    assert done["status"] == "COMPLETED", done
    assert sorted(done["outputs"]["sent"]) == [i for i in items if i % 2 == 0]
    assert sorted(done["outputs"]["refused"]) == sorted(f"odd {i}" for i in items if i % 2)


async def test_a_decision_whose_resume_job_was_lost_is_picked_up_by_the_sweep(stack, new_user):
    """The decision committed but its process died before enqueueing the run: the
    workers' sweep finds a REVIEW run with nothing pending and enqueues it."""
    gql = stack.gql
    user = new_user()
    await gql.ok("{ me { id } }", token=user.token)
    graph = await create_graph(gql, user, REVIEWED_GRAPH)
    started = await execute(gql, user, graph["id"], {"draft": "lost"})
    [review] = (await wait_for_review(gql, user, started["id"]))["pendingReviews"]
    decided_at = utcnow() - timedelta(minutes=2)
    await NodeReview.filter(id=review["id"]).update(status="APPROVED", decided_at=decided_at)
    settings = get_settings().model_copy(update={"REDIS_PREFIX": stack.extra_env["REDIS_PREFIX"]})
    redis = create_redis(settings)
    try:
        assert await requeue_decided_runs(settings, redis, utcnow()) >= 1
    finally:
        await redis.aclose()
    done = await wait_for_end(gql, user, started["id"])
    assert done["status"] == "COMPLETED" and done["outputs"] == {"sent": ["lost"]}
    listed = await gql.ok("{ executions(statuses: [REVIEW]) { totalCount } }", token=user.token)
    assert listed["executions"]["totalCount"] == 0
