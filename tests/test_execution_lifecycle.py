"""An execution's life as its owner sees it (SEMANTICS.md §3, §4, §7): stopping,
listing and paging, reading stats, sharing, deleting, onboarding side effects,
sub-graph runs, legacy-protocol subscriptions and /metrics."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import datetime

import pytest
import websockets

from app.models import CreditTransaction, Execution
from tests.conftest import TEST_ENV
from tests.execution_helpers import (
    GET_EXECUTION,
    OwnStack,
    execute,
    metric_values,
    wait_for_end,
    wait_for_node,
)
from tests.graph_builders import create_graph, echo_graph, link, node, node_ids
from tests.harness import ROOT, graphql_ws

STOP = "mutation($id: ID!) { stopExecution(id: $id) { id status startedAt endedAt } }"
DELETE = "mutation($id: ID!) { deleteExecution(id: $id) }"
SHARE = "mutation($id: ID!) { shareExecution(id: $id) { shareUrl shareToken } }"
UNSHARE = "mutation($id: ID!) { unshareExecution(id: $id) { id isShared shareToken } }"
SHARED = """query($t: String!) { sharedExecution(shareToken: $t) {
  id graphName graphDescription status createdAt outputs } }"""
LIST = """query($g: ID, $s: [ExecutionStatus!], $first: Int!, $after: String) {
  executions(graphId: $g, statuses: $s, first: $first, after: $after) {
    totalCount pageInfo { hasNextPage endCursor }
    edges { cursor node { id graphId status } } } }"""
EVENTS = """subscription($id: ID!) { executionEvents(executionId: $id) {
  __typename
  ... on ExecutionStatusEvent { seq execution { id status outputs } }
  ... on NodeExecutionEvent { seq executionId nodeExecution { id nodeId status } } } }"""
ONBOARDING = "{ onboarding { completedSteps rewardedFor agentRuns onboardingAgentExecutionId } }"
CREDITS = "{ me { credits } }"


def seconds_between(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def auth(user) -> dict:
    return {"Authorization": f"Bearer {user.token}"}


async def credits(gql, user) -> int:
    return (await gql.ok(CREDITS, token=user.token))["me"]["credits"]


async def collect_events(ws, execution_id: str) -> list[dict]:
    """Every event of one executionEvents subscription until it completes."""
    op_id = await ws.subscribe(EVENTS, {"id": execution_id})
    events = []
    async for message in ws.results(op_id, timeout=30):
        assert message["type"] in ("next", "complete"), message
        if message["type"] == "next":
            assert "errors" not in message["payload"], message
            events.append(message["payload"]["data"]["executionEvents"])
    return events


def waiting_graph(seconds: float = 30) -> dict:
    """A quick branch that finishes at once, and a long Wait that a paid Wait follows."""
    return {
        "name": "long wait",
        "description": "waits",
        "nodes": [
            node("quick", "StoreValue", data="now"),
            node("quick_out", "AgentOutput", name="quick"),
            node("long", "Wait", input="late", seconds=seconds),
            node("after", "Wait", seconds=0.1),
            node("out", "AgentOutput", name="late"),
        ],
        "links": [
            link("quick", "output", "quick_out", "value"),
            link("long", "output", "after", "input"),
            link("after", "output", "out", "value"),
        ],
    }


def failing_graph() -> dict:
    return {
        "name": "fails",
        "nodes": [
            node("calc", "Calculator", operation="divide", a=1, b=0),
            node("ok", "StoreValue", data="fine"),
            node("out", "AgentOutput", name="ok"),
        ],
        "links": [link("ok", "output", "out", "value")],
    }


@pytest.fixture(scope="module")
async def own_stack(database) -> AsyncIterator[OwnStack]:
    stack = OwnStack(TEST_ENV, "lifecycle")
    await stack.start()
    try:
        yield stack
    finally:
        await stack.stop()


async def queue_depth(stack: OwnStack) -> float:
    return metric_values(await stack.metrics(), "agentgraph_queue_depth")[""]


# ------------------------------------------------------------------ stopping


async def test_stopped_queued_execution_never_starts(own_stack, user):
    gql = own_stack.gql
    graph = await create_graph(gql, user)
    before = await credits(gql, user)
    executions_before = metric_values(await own_stack.metrics(), "agentgraph_executions_total")
    started = await execute(gql, user, graph["id"], {"text": "never"})
    assert started["status"] == "QUEUED"
    assert await queue_depth(own_stack) == 1  # no worker listens to this stack yet

    stopped = (await gql.ok(STOP, {"id": started["id"]}, token=user.token))["stopExecution"]
    assert stopped["id"] == started["id"]
    assert stopped["status"] == "TERMINATED"
    assert stopped["startedAt"] is None and stopped["endedAt"]

    # A worker arrives and takes the job off the queue: it must not run it.
    worker = own_stack.worker()
    await worker.start()
    try:
        for _ in range(200):
            if await queue_depth(own_stack) == 0:
                break
            await asyncio.sleep(0.05)
        assert await queue_depth(own_stack) == 0, worker.log()
        execution = (await gql.ok(GET_EXECUTION, {"id": started["id"]}, token=user.token))[
            "execution"
        ]
        assert execution["status"] == "TERMINATED"
        assert execution["startedAt"] is None
        assert execution["nodeExecutions"] == []
        assert execution["outputs"] == {}
        assert await credits(gql, user) == before
        # It has ended: stopping again answers null and changes nothing.
        assert (await gql.ok(STOP, {"id": started["id"]}, token=user.token)) == {
            "stopExecution": None
        }
        # The same worker does run what is not stopped.
        again = await execute(gql, user, graph["id"], {"text": "runs"})
        done = await wait_for_end(gql, user, again["id"])
        assert done["status"] == "COMPLETED" and done["outputs"] == {"result": ["runs"]}
        counted = metric_values(await own_stack.metrics(), "agentgraph_executions_total")
        label = 'status="TERMINATED"'
        assert counted.get(label, 0) - executions_before.get(label, 0) == 1
    finally:
        await worker.stop()


async def test_stop_cancels_the_running_node_and_ends_terminated(api, gql, user, worker):
    spec = waiting_graph(seconds=30)
    graph = await create_graph(gql, user, spec)
    ids = node_ids(spec, graph)
    before = await credits(gql, user)
    started = await execute(gql, user, graph["id"])
    async with graphql_ws(api.ws_url, auth(user)) as ws:
        events_task = asyncio.create_task(collect_events(ws, started["id"]))
        running = await wait_for_node(gql, user, started["id"], ids["long"], {"RUNNING"})
        assert running["status"] == "RUNNING"

        stopped = (await gql.ok(STOP, {"id": started["id"]}, token=user.token))["stopExecution"]
        assert stopped["status"] == "TERMINATED" and stopped["endedAt"]
        events = await events_task

    execution = (await gql.ok(GET_EXECUTION, {"id": started["id"]}, token=user.token))["execution"]
    assert execution["status"] == "TERMINATED"
    by_node = {n["nodeId"]: n for n in execution["nodeExecutions"]}
    assert by_node[ids["long"]]["status"] == "TERMINATED"
    assert by_node[ids["long"]]["endedAt"]
    # The quick branch had finished and keeps its output.
    assert by_node[ids["quick"]]["status"] == "COMPLETED"
    assert execution["outputs"] == {"quick": ["now"]}
    # What follows the long wait never started.
    assert ids["after"] not in by_node and ids["out"] not in by_node
    assert not [n for n in execution["nodeExecutions"] if n["status"] in ("QUEUED", "RUNNING")]
    # The stopped Wait pays for the seconds it ran (Wait costs 1 a second, at
    # least 1 once it ran), once, keyed by its node execution; nothing else is paid.
    long_run = by_node[ids["long"]]
    charged = await CreditTransaction.filter(usage_execution_id=started["id"])
    assert [t.key for t in charged] == [f"{long_run['id']}:time"]
    ran = seconds_between(long_run["startedAt"], long_run["endedAt"])
    assert -charged[0].amount == max(1, round(ran))
    assert execution["stats"]["cost"] == -charged[0].amount
    assert await credits(gql, user) == before + charged[0].amount

    # The live stream saw the node end TERMINATED, then the execution, and completed.
    assert events[-1]["__typename"] == "ExecutionStatusEvent"
    assert events[-1]["execution"]["status"] == "TERMINATED"
    node_events = [e for e in events if e["__typename"] == "NodeExecutionEvent"]
    assert any(
        e["nodeExecution"]["nodeId"] == ids["long"] and e["nodeExecution"]["status"] == "TERMINATED"
        for e in node_events
    )
    # Stopping an ended execution answers null.
    assert (await gql.ok(STOP, {"id": started["id"]}, token=user.token)) == {"stopExecution": None}


async def test_another_users_execution_cannot_be_stopped(gql, user, new_user, worker):
    owner = new_user()
    spec = waiting_graph(seconds=30)
    graph = await create_graph(gql, owner, spec)
    ids = node_ids(spec, graph)
    started = await execute(gql, owner, graph["id"])
    await wait_for_node(gql, owner, started["id"], ids["long"], {"RUNNING"})

    absent = await gql.error(STOP, {"id": str(uuid.uuid4())}, token=user.token)
    foreign = await gql.error(STOP, {"id": started["id"]}, token=user.token)
    # Indistinguishable from an id that does not exist.
    assert foreign == absent and foreign["extensions"] == {"code": "NOT_FOUND"}

    execution = (await gql.ok(GET_EXECUTION, {"id": started["id"]}, token=owner.token))["execution"]
    assert execution["status"] == "RUNNING"
    assert {n["status"] for n in execution["nodeExecutions"] if n["nodeId"] == ids["long"]} == {
        "RUNNING"
    }
    # The owner's key may stop it only with EXECUTE_GRAPH.
    keys = {}
    for permission in ("READ_EXECUTION", "EXECUTE_GRAPH"):
        created = await gql.ok(
            'mutation($p: [ApiKeyPermission!]!) { createApiKey(input: {name: "k", '
            "permissions: $p}) { plainTextKey } }",
            {"p": [permission]},
            token=owner.token,
        )
        keys[permission] = created["createApiKey"]["plainTextKey"]
    refused = await gql.error(STOP, {"id": started["id"]}, api_key=keys["READ_EXECUTION"])
    assert refused["extensions"]["code"] == "FORBIDDEN"
    assert (await Execution.get(id=started["id"])).status == "RUNNING"
    stopped = (await gql.ok(STOP, {"id": started["id"]}, api_key=keys["EXECUTE_GRAPH"]))[
        "stopExecution"
    ]
    assert stopped["status"] == "TERMINATED"


# ------------------------------------------------------------------ listing


async def list_all(gql, user, first: int, **filters) -> tuple[list[dict], list[dict]]:
    """Every page of executions(...): (edges, pages)."""
    edges, pages, after = [], [], None
    while True:
        page = (await gql.ok(LIST, {"first": first, "after": after, **filters}, token=user.token))[
            "executions"
        ]
        pages.append(page)
        edges.extend(page["edges"])
        if not page["pageInfo"]["hasNextPage"]:
            return edges, pages
        after = page["pageInfo"]["endCursor"]
        assert after == page["edges"][-1]["cursor"]


async def test_executions_filter_by_graph_and_status(gql, user, new_user, worker):
    echo = await create_graph(gql, user)
    fails = await create_graph(gql, user, failing_graph())
    runs = [await execute(gql, user, echo["id"], {"text": str(i)}) for i in range(2)]
    runs.append(await execute(gql, user, fails["id"]))
    for run in runs:
        await wait_for_end(gql, user, run["id"])
    other = new_user()
    others_graph = await create_graph(gql, other)
    theirs = await execute(gql, other, others_graph["id"], {"text": "theirs"})

    async def ids(**filters) -> tuple[list[str], int]:
        page = (await gql.ok(LIST, {"first": 100, **filters}, token=user.token))["executions"]
        return [e["node"]["id"] for e in page["edges"]], page["totalCount"]

    every = [r["id"] for r in reversed(runs)]  # newest first
    assert await ids() == (every, 3)
    assert await ids(g=echo["id"]) == ([runs[1]["id"], runs[0]["id"]], 2)
    assert await ids(g=fails["id"]) == ([runs[2]["id"]], 1)
    assert await ids(s=["FAILED"]) == ([runs[2]["id"]], 1)
    assert await ids(s=["COMPLETED"]) == ([runs[1]["id"], runs[0]["id"]], 2)
    assert await ids(s=["COMPLETED", "FAILED"]) == (every, 3)
    assert await ids(s=["QUEUED", "RUNNING"]) == ([], 0)
    assert await ids(g=echo["id"], s=["FAILED"]) == ([], 0)
    # Another user's graph and runs are as absent as a graph that never was.
    assert await ids(g=others_graph["id"]) == ([], 0)
    assert await ids(g=str(uuid.uuid4())) == ([], 0)
    assert await ids(g="not-an-id") == ([], 0)
    assert theirs["id"] not in (await ids())[0]


async def test_executions_page_with_cursors(gql, user):
    graph = await create_graph(gql, user)
    runs = [await execute(gql, user, graph["id"], {"text": str(i)}) for i in range(5)]
    newest_first = [r["id"] for r in reversed(runs)]

    edges, pages = await list_all(gql, user, 2, g=graph["id"])
    assert [e["node"]["id"] for e in edges] == newest_first
    assert [len(p["edges"]) for p in pages] == [2, 2, 1]
    assert {p["totalCount"] for p in pages} == {5}
    assert [p["pageInfo"]["hasNextPage"] for p in pages] == [True, True, False]
    assert pages[-1]["pageInfo"]["endCursor"] == edges[-1]["cursor"]

    one_page, _ = await list_all(gql, user, 100, g=graph["id"])
    assert [e["node"]["id"] for e in one_page] == newest_first

    # Past the last item: an empty page, no cursor.
    last = (
        await gql.ok(
            LIST, {"first": 5, "after": edges[-1]["cursor"], "g": graph["id"]}, token=user.token
        )
    )["executions"]
    assert last["edges"] == [] and last["totalCount"] == 5
    assert last["pageInfo"] == {"hasNextPage": False, "endCursor": None}


def _cursor(raw) -> str:
    return base64.urlsafe_b64encode(json.dumps(raw).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "variables",
    [
        {"first": 0},
        {"first": -1},
        {"first": 101},
        {"first": 10, "after": "not a cursor"},
        {"first": 10, "after": "%%%"},
        {"first": 10, "after": _cursor(["yesterday", str(uuid.uuid4())])},
        {"first": 10, "after": _cursor(["2025-01-01T00:00:00+00:00", "not-a-uuid"])},
        {"first": 10, "after": _cursor({"a": 1})},
        {"first": 10, "after": _cursor(["2025-01-01T00:00:00+00:00"])},
    ],
)
async def test_bad_paging_input_is_bad_user_input(gql, user, variables):
    graph = await create_graph(gql, user)
    await execute(gql, user, graph["id"], {"text": "x"})
    before = await Execution.filter(user_id=user.id).count()
    error = await gql.error(LIST, variables, token=user.token)
    assert error["extensions"]["code"] == "BAD_USER_INPUT", error
    assert await Execution.filter(user_id=user.id).count() == before


async def test_cursor_without_time_zone_still_pages(gql, user):
    """A cursor a client built by hand with a naive time is read as UTC."""
    graph = await create_graph(gql, user)
    run = await execute(gql, user, graph["id"], {"text": "x"})
    cursor = _cursor(["2999-01-01T00:00:00", str(uuid.uuid4())])
    page = (await gql.ok(LIST, {"first": 10, "after": cursor}, token=user.token))["executions"]
    assert [e["node"]["id"] for e in page["edges"]] == [run["id"]]


# ------------------------------------------------------------------ reading one


async def test_execution_reports_node_runs_and_stats(gql, user, worker, settings):
    spec = {
        "name": "mixed",
        "nodes": [
            node("w", "Wait", input="waited", seconds=0.3),
            node("o", "AgentOutput", name="o"),
            node("calc", "Calculator", operation="divide", a=1, b=0),
        ],
        "links": [link("w", "output", "o", "value")],
    }
    graph = await create_graph(gql, user, spec)
    ids = node_ids(spec, graph)
    before = await credits(gql, user)
    started = await execute(gql, user, graph["id"])
    done = await wait_for_end(gql, user, started["id"])

    assert done["status"] == "FAILED"
    assert done["outputs"] == {"o": ["waited"]}
    by_node = {n["nodeId"]: n for n in done["nodeExecutions"]}
    assert set(by_node) == set(ids.values()) and len(done["nodeExecutions"]) == 3
    wait_run = by_node[ids["w"]]
    assert wait_run["status"] == "COMPLETED"
    assert wait_run["inputData"]["seconds"] == 0.3
    assert wait_run["outputData"] == {"output": ["waited"]}
    assert wait_run["queuedAt"] <= wait_run["startedAt"] <= wait_run["endedAt"]
    failed = by_node[ids["calc"]]
    assert failed["status"] == "FAILED" and "zero" in failed["error"].lower()

    stats = done["stats"]
    assert stats["nodeCount"] == 3 and stats["nodeErrorCount"] == 1
    assert stats["error"] == failed["error"]
    assert stats["durationSeconds"] >= 0.3 and stats["nodeRunSeconds"] >= 0.3
    charged = await CreditTransaction.filter(usage_execution_id=started["id"], type="USAGE")
    assert stats["cost"] == -sum(t.amount for t in charged) == 1
    assert await credits(gql, user) == before - stats["cost"]
    # Insight fields stay hidden without the AI_ACTIVITY_STATUS flag.
    assert stats["activitySummary"] is None and stats["correctnessScore"] is None

    set_flag(user.id, "AI_ACTIVITY_STATUS", "on")
    shown = (await gql.ok(GET_EXECUTION, {"id": started["id"]}, token=user.token))["execution"]
    assert shown["stats"]["correctnessScore"] == pytest.approx(2 / 3)
    assert shown["stats"]["activitySummary"]
    assert "FAILED" in shown["stats"]["activitySummary"].upper()
    # A run with every node completed scores 1.
    echo = await create_graph(gql, user)
    clean = await wait_for_end(
        gql, user, (await execute(gql, user, echo["id"], {"text": "x"}))["id"]
    )
    assert clean["stats"]["correctnessScore"] == 1.0

    set_flag(user.id, "AI_ACTIVITY_STATUS", "off")
    hidden = (await gql.ok(GET_EXECUTION, {"id": started["id"]}, token=user.token))["execution"]
    assert hidden["stats"]["activitySummary"] is None
    assert hidden["stats"]["correctnessScore"] is None


def set_flag(user_id: uuid.UUID, flag: str, state: str) -> None:
    """`agentgraph flag USER FLAG on|off|default`, as an operator runs it."""
    subprocess.run(
        [sys.executable, "-m", "app.cli", "flag", str(user_id), flag, state],
        cwd=ROOT,
        env={**os.environ, **TEST_ENV},
        check=True,
        capture_output=True,
    )


async def test_unknown_or_foreign_execution_reads_as_null(gql, user, new_user):
    other = new_user()
    graph = await create_graph(gql, other)
    theirs = await execute(gql, other, graph["id"], {"text": "x"})
    for execution_id in (theirs["id"], str(uuid.uuid4()), "nope"):
        data = await gql.ok(GET_EXECUTION, {"id": execution_id}, token=user.token)
        assert data == {"execution": None}


# ------------------------------------------------------------------ sharing and deleting


async def test_share_shows_public_fields_until_unshared(gql, user, worker, settings):
    graph = await create_graph(gql, user, {**echo_graph("shared echo"), "description": "d"})
    done = await wait_for_end(
        gql, user, (await execute(gql, user, graph["id"], {"text": "public"}))["id"]
    )
    link_ = (await gql.ok(SHARE, {"id": done["id"]}, token=user.token))["shareExecution"]
    token = link_["shareToken"]
    assert uuid.UUID(token).version == 4
    assert link_["shareUrl"] == f"{settings.FRONTEND_BASE_URL}/share/{token}"
    again = (await gql.ok(SHARE, {"id": done["id"]}, token=user.token))["shareExecution"]
    assert again == link_  # sharing twice keeps the one link
    mine = (await gql.ok(GET_EXECUTION, {"id": done["id"]}, token=user.token))["execution"]
    assert mine["isShared"] is True and mine["shareToken"] == token

    # No sign-in needed, and only the public fields exist.
    public = (await gql.ok(SHARED, {"t": token}))["sharedExecution"]
    assert public == {
        "id": done["id"],
        "graphName": "shared echo",
        "graphDescription": "d",
        "status": "COMPLETED",
        "createdAt": done["createdAt"],
        "outputs": {"result": ["public"]},
    }
    private = await gql.error(
        "query($t: String!) { sharedExecution(shareToken: $t) { inputs } }", {"t": token}
    )
    assert private["extensions"]["code"] == "BAD_USER_INPUT"

    unshared = (await gql.ok(UNSHARE, {"id": done["id"]}, token=user.token))["unshareExecution"]
    assert unshared == {"id": done["id"], "isShared": False, "shareToken": None}
    assert (await gql.ok(SHARED, {"t": token})) == {"sharedExecution": None}
    # Sharing again makes a new link; the old one stays dead.
    fresh = (await gql.ok(SHARE, {"id": done["id"]}, token=user.token))["shareExecution"]
    assert fresh["shareToken"] != token
    assert (await gql.ok(SHARED, {"t": token})) == {"sharedExecution": None}
    assert (await gql.ok(SHARED, {"t": fresh["shareToken"]}))["sharedExecution"]["id"] == done["id"]
    for junk in ("", "not-a-token", str(uuid.uuid4())):
        assert (await gql.ok(SHARED, {"t": junk})) == {"sharedExecution": None}


async def test_delete_stops_a_running_execution_and_hides_it(api, gql, user, worker):
    spec = waiting_graph(seconds=30)
    graph = await create_graph(gql, user, spec)
    ids = node_ids(spec, graph)
    started = await execute(gql, user, graph["id"])
    token = (await gql.ok(SHARE, {"id": started["id"]}, token=user.token))["shareExecution"][
        "shareToken"
    ]
    await wait_for_node(gql, user, started["id"], ids["long"], {"RUNNING"})

    deleted = await gql.ok(DELETE, {"id": started["id"]}, token=user.token)
    assert deleted == {"deleteExecution": started["id"]}

    # Stopped first: nothing of it runs on.
    row = await Execution.get(id=started["id"])
    assert row.status == "TERMINATED"
    assert not await row.node_executions.filter(status__in=["QUEUED", "RUNNING"]).exists()
    # Then hidden everywhere.
    assert (await gql.ok(GET_EXECUTION, {"id": started["id"]}, token=user.token)) == {
        "execution": None
    }
    listed = (await gql.ok(LIST, {"first": 100, "g": graph["id"]}, token=user.token))["executions"]
    assert listed["edges"] == [] and listed["totalCount"] == 0
    assert (await gql.ok(SHARED, {"t": token})) == {"sharedExecution": None}
    for mutation in (STOP, DELETE, SHARE, UNSHARE):
        error = await gql.error(mutation, {"id": started["id"]}, token=user.token)
        assert error["extensions"] == {"code": "NOT_FOUND"}, mutation
    async with graphql_ws(api.ws_url, auth(user)) as ws:
        op_id = await ws.subscribe(EVENTS, {"id": started["id"]})
        messages = [m async for m in ws.results(op_id)]
    errors = messages[0]["payload"]
    errors = errors if isinstance(errors, list) else errors["errors"]
    assert errors[0]["extensions"]["code"] == "NOT_FOUND"


async def test_delete_of_an_ended_execution_hides_it(gql, user, worker):
    graph = await create_graph(gql, user)
    done = await wait_for_end(
        gql, user, (await execute(gql, user, graph["id"], {"text": "x"}))["id"]
    )
    assert (await gql.ok(DELETE, {"id": done["id"]}, token=user.token)) == {
        "deleteExecution": done["id"]
    }
    row = await Execution.get(id=done["id"])
    assert row.status == "COMPLETED"  # its history is kept, only hidden
    assert (await gql.ok(GET_EXECUTION, {"id": done["id"]}, token=user.token)) == {
        "execution": None
    }


async def test_foreign_execution_is_indistinguishable_from_absent(gql, user, new_user, worker):
    other = new_user()
    graph = await create_graph(gql, other)
    theirs = await wait_for_end(
        gql, other, (await execute(gql, other, graph["id"], {"text": "x"}))["id"]
    )
    token = (await gql.ok(SHARE, {"id": theirs["id"]}, token=other.token))["shareExecution"][
        "shareToken"
    ]
    absent = str(uuid.uuid4())
    for mutation in (STOP, DELETE, SHARE, UNSHARE):
        foreign = await gql.error(mutation, {"id": theirs["id"]}, token=user.token)
        missing = await gql.error(mutation, {"id": absent}, token=user.token)
        assert foreign == missing, mutation
        assert foreign["extensions"] == {"code": "NOT_FOUND"}
    # Nothing changed for its owner: still there, still shared with the same token.
    mine = (await gql.ok(GET_EXECUTION, {"id": theirs["id"]}, token=other.token))["execution"]
    assert mine["status"] == "COMPLETED" and mine["shareToken"] == token
    assert (await gql.ok(SHARED, {"t": token}))["sharedExecution"]["id"] == theirs["id"]


# ------------------------------------------------------------------ onboarding


async def onboarding(gql, user) -> dict:
    return (await gql.ok(ONBOARDING, token=user.token))["onboarding"]


async def test_running_agents_completes_onboarding_steps(gql, user, worker, settings):
    rewards = settings.ONBOARDING_REWARDS
    graph = await create_graph(gql, user)
    other_graph = await create_graph(gql, user)
    start = await credits(gql, user)

    first = await execute(gql, user, graph["id"], {"text": "1"}, s="BUILDER")
    progress = await onboarding(gql, user)
    assert progress["agentRuns"] == 1
    assert "BUILDER_RUN_AGENT" in progress["completedSteps"]
    assert "RE_RUN_AGENT" not in progress["completedSteps"]
    assert await credits(gql, user) == start + rewards["BUILDER_RUN_AGENT"]

    await execute(gql, user, other_graph["id"], {"text": "2"}, s="LIBRARY")
    progress = await onboarding(gql, user)
    assert "MARKETPLACE_RUN_AGENT" in progress["completedSteps"]
    assert "RE_RUN_AGENT" not in progress["completedSteps"]  # a different graph

    await execute(gql, user, graph["id"], {"text": "3"})
    progress = await onboarding(gql, user)
    assert "RE_RUN_AGENT" in progress["completedSteps"]
    assert "RUN_AGENTS" not in progress["completedSteps"]
    assert progress["agentRuns"] == 3

    for i in range(6):
        await execute(gql, user, graph["id"], {"text": str(i)})
    assert "RUN_AGENTS" not in (await onboarding(gql, user))["completedSteps"]
    await execute(gql, user, graph["id"], {"text": "tenth"})
    progress = await onboarding(gql, user)
    assert progress["agentRuns"] == 10
    assert "RUN_AGENTS" in progress["completedSteps"]
    assert "RUN_AGENTS" in progress["rewardedFor"]
    expected = start + sum(
        rewards.get(s, 0)
        for s in ("BUILDER_RUN_AGENT", "MARKETPLACE_RUN_AGENT", "RE_RUN_AGENT", "RUN_AGENTS")
    )
    assert await credits(gql, user) == expected

    # Reading the onboarding agent's run completes GET_RESULTS, once.
    await gql.ok(
        "mutation($id: ID!) { updateOnboarding(input: {onboardingAgentExecutionId: $id}) "
        "{ onboardingAgentExecutionId } }",
        {"id": first["id"]},
        token=user.token,
    )
    assert "GET_RESULTS" not in (await onboarding(gql, user))["completedSteps"]
    for _ in range(2):
        await gql.ok(GET_EXECUTION, {"id": first["id"]}, token=user.token)
    progress = await onboarding(gql, user)
    assert "GET_RESULTS" in progress["completedSteps"] and "GET_RESULTS" in progress["rewardedFor"]
    assert await credits(gql, user) == expected + rewards["GET_RESULTS"]


async def test_failed_run_request_counts_no_run(gql, user):
    graph = await create_graph(gql, user)
    error = await gql.error(
        "mutation($id: ID!) { executeGraph(graphId: $id, inputs: {}, source: BUILDER) { id } }",
        {"id": graph["id"]},
        token=user.token,
    )
    assert error["extensions"]["code"] == "GRAPH_VALIDATION_FAILED"
    progress = await onboarding(gql, user)
    assert progress["agentRuns"] == 0 and "BUILDER_RUN_AGENT" not in progress["completedSteps"]


# ------------------------------------------------------------------ sub-graphs


async def test_sub_graph_events_and_cost_roll_up_to_the_parent(api, gql, user, worker):
    child_spec = {
        "name": "child",
        "nodes": [
            node("in", "AgentInput", name="text", type="string"),
            node("w", "Wait", seconds=0.2),
            node("out", "AgentOutput", name="result"),
        ],
        "links": [link("in", "result", "w", "input"), link("w", "output", "out", "value")],
    }
    child = await create_graph(gql, user, child_spec)
    child_ids = node_ids(child_spec, child)
    parent_spec = {
        "name": "parent",
        "nodes": [
            node("sub", "SubGraph", graph_id=child["id"], graph_version=1, inputs={"text": "deep"}),
            node("w", "Wait", seconds=0.1),
            node("final", "AgentOutput", name="final"),
        ],
        "links": [link("sub", "result", "w", "input"), link("w", "output", "final", "value")],
    }
    parent = await create_graph(gql, user, parent_spec)
    parent_ids = node_ids(parent_spec, parent)
    before = await credits(gql, user)

    async with graphql_ws(api.ws_url, auth(user)) as ws:
        started = await execute(gql, user, parent["id"])
        events = await collect_events(ws, started["id"])
    done = await wait_for_end(gql, user, started["id"])
    assert done["status"] == "COMPLETED", done
    assert done["outputs"] == {"final": ["deep"]}
    assert {n["nodeId"] for n in done["nodeExecutions"]} == set(parent_ids.values())

    # The child's node events reach the parent's stream, marked with the child's id.
    node_events = [e for e in events if e["__typename"] == "NodeExecutionEvent"]
    child_events = [e for e in node_events if e["executionId"] != started["id"]]
    assert child_events, events
    child_execution_id = child_events[0]["executionId"]
    assert {e["executionId"] for e in child_events} == {child_execution_id}
    assert {
        e["nodeExecution"]["nodeId"]
        for e in child_events
        if e["nodeExecution"]["status"] == "COMPLETED"
    } == set(child_ids.values())
    seqs = [e["seq"] for e in events[1:]]
    assert seqs == sorted(set(seqs))
    assert events[-1]["execution"]["status"] == "COMPLETED"

    # Sub-graph runs live inside their parent, not in the list.
    listed = (await gql.ok(LIST, {"first": 100}, token=user.token))["executions"]
    assert child_execution_id not in [e["node"]["id"] for e in listed["edges"]]

    # The parent's cost includes the child's paid node; the ledger agrees.
    child_cost = -sum(
        t.amount for t in await CreditTransaction.filter(usage_execution_id=child_execution_id)
    )
    own_cost = -sum(
        t.amount for t in await CreditTransaction.filter(usage_execution_id=started["id"])
    )
    assert child_cost == 1 and own_cost == 1
    assert done["stats"]["cost"] == child_cost + own_cost
    assert await credits(gql, user) == before - done["stats"]["cost"]


async def test_stopping_a_parent_stops_its_sub_graph_run(gql, user, worker):
    child_spec = {
        "name": "slow child",
        "nodes": [node("w", "Wait", input="x", seconds=30), node("o", "AgentOutput", name="o")],
        "links": [link("w", "output", "o", "value")],
    }
    child = await create_graph(gql, user, child_spec)
    child_wait = node_ids(child_spec, child)["w"]
    parent_spec = {
        "name": "parent of slow",
        "nodes": [
            node("sub", "SubGraph", graph_id=child["id"], graph_version=1),
            node("out", "AgentOutput", name="o"),
        ],
        "links": [link("sub", "o", "out", "value")],
    }
    parent = await create_graph(gql, user, parent_spec)
    sub_node = node_ids(parent_spec, parent)["sub"]
    started = await execute(gql, user, parent["id"])
    await wait_for_node(gql, user, started["id"], sub_node, {"RUNNING"})
    child_run = None
    for _ in range(600):
        child_run = await Execution.get_or_none(parent_execution_id=started["id"])
        if child_run and await child_run.node_executions.filter(status="RUNNING").exists():
            break
        await asyncio.sleep(0.05)
    assert child_run is not None

    stopped = (await gql.ok(STOP, {"id": started["id"]}, token=user.token))["stopExecution"]
    assert stopped["status"] == "TERMINATED"
    child_view = (await gql.ok(GET_EXECUTION, {"id": str(child_run.id)}, token=user.token))[
        "execution"
    ]
    assert child_view["status"] == "TERMINATED"
    assert [(n["nodeId"], n["status"]) for n in child_view["nodeExecutions"]] == [
        (child_wait, "TERMINATED")
    ]
    # The stopped Wait inside the child paid for the seconds it ran, once.
    [wait_run] = child_view["nodeExecutions"]
    charged = await CreditTransaction.filter(usage_execution_id=child_run.id)
    assert [t.key for t in charged] == [f"{wait_run['id']}:time"]
    assert charged[0].amount <= -1
    parent_view = (await gql.ok(GET_EXECUTION, {"id": started["id"]}, token=user.token))[
        "execution"
    ]
    assert [(n["nodeId"], n["status"]) for n in parent_view["nodeExecutions"]] == [
        (sub_node, "TERMINATED")
    ]


async def test_stopping_a_sub_graph_run_stops_the_run_it_belongs_to(gql, user, worker):
    child_spec = {
        "name": "slow child 2",
        "nodes": [node("w", "Wait", input="x", seconds=30), node("o", "AgentOutput", name="o")],
        "links": [link("w", "output", "o", "value")],
    }
    child = await create_graph(gql, user, child_spec)
    parent_spec = {
        "name": "parent of slow 2",
        "nodes": [
            node("sub", "SubGraph", graph_id=child["id"], graph_version=1),
            node("out", "AgentOutput", name="o"),
        ],
        "links": [link("sub", "o", "out", "value")],
    }
    parent = await create_graph(gql, user, parent_spec)
    started = await execute(gql, user, parent["id"])
    child_run = None
    for _ in range(600):
        child_run = await Execution.get_or_none(parent_execution_id=started["id"])
        if child_run and await child_run.node_executions.filter(status="RUNNING").exists():
            break
        await asyncio.sleep(0.05)
    assert child_run is not None

    stopped = (await gql.ok(STOP, {"id": str(child_run.id)}, token=user.token))["stopExecution"]
    assert stopped["status"] == "TERMINATED"
    parent_view = await wait_for_end(gql, user, started["id"])
    assert parent_view["status"] == "TERMINATED"


# ------------------------------------------------------------------ legacy protocol


async def test_legacy_graphql_ws_subscription_receives_execution_events(api, gql, user, worker):
    graph = await create_graph(gql, user)
    started = await execute(gql, user, graph["id"], {"text": "old"})
    messages = []
    async with websockets.connect(api.ws_url, subprotocols=["graphql-ws"]) as ws:
        await ws.send(json.dumps({"type": "connection_init", "payload": auth(user)}))
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        await ws.send(
            json.dumps(
                {
                    "id": "1",
                    "type": "start",
                    "payload": {"query": EVENTS, "variables": {"id": started["id"]}},
                }
            )
        )
        while True:
            message = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if message["type"] == "ka":
                continue
            messages.append(message)
            if message["type"] in ("complete", "error"):
                break
    assert messages[-1] == {"type": "complete", "id": "1"}
    events = [m["payload"]["data"]["executionEvents"] for m in messages[:-1]]
    assert {m["type"] for m in messages[:-1]} == {"data"}
    assert events[0]["__typename"] == "ExecutionStatusEvent"
    assert events[-1]["execution"] == {
        "id": started["id"],
        "status": "COMPLETED",
        "outputs": {"result": ["old"]},
    }


# ------------------------------------------------------------------ metrics


async def test_metrics_count_executions_and_node_runs(own_stack, user):
    gql = own_stack.gql
    before = await own_stack.metrics()
    executions_before = metric_values(before, "agentgraph_executions_total")
    node_runs_before = metric_values(before, "agentgraph_node_runs_total")
    worker = own_stack.worker()
    await worker.start()
    try:
        echo = await create_graph(gql, user)
        fails = await create_graph(gql, user, failing_graph())
        for run in (
            await execute(gql, user, echo["id"], {"text": "a"}),
            await execute(gql, user, echo["id"], {"text": "b"}),
            await execute(gql, user, fails["id"]),
        ):
            await wait_for_end(gql, user, run["id"])
        spec = waiting_graph(seconds=30)
        waiting = await create_graph(gql, user, spec)
        stopped = await execute(gql, user, waiting["id"])
        await wait_for_node(gql, user, stopped["id"], node_ids(spec, waiting)["long"], {"RUNNING"})
        await gql.ok(STOP, {"id": stopped["id"]}, token=user.token)
    finally:
        await worker.stop()
    after = await own_stack.metrics()

    def delta(now: dict, then: dict, status: str) -> float:
        label = f'status="{status}"'
        return now.get(label, 0) - then.get(label, 0)

    executions_after = metric_values(after, "agentgraph_executions_total")
    node_runs_after = metric_values(after, "agentgraph_node_runs_total")
    assert delta(executions_after, executions_before, "COMPLETED") == 2
    assert delta(executions_after, executions_before, "FAILED") == 1
    assert delta(executions_after, executions_before, "TERMINATED") == 1
    # Two echo runs of three nodes, the failing graph's three, the stopped run's quick two.
    assert delta(node_runs_after, node_runs_before, "COMPLETED") == 2 * 3 + 2 + 2
    assert delta(node_runs_after, node_runs_before, "FAILED") == 1
    assert delta(node_runs_after, node_runs_before, "TERMINATED") == 1  # the long wait
    assert metric_values(after, "agentgraph_queue_depth") == {"": 0}
    # Requests are counted too.
    assert sum(metric_values(after, "agentgraph_graphql_requests_total").values()) > sum(
        metric_values(before, "agentgraph_graphql_requests_total").values()
    )
