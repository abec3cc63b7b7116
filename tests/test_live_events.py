"""Live execution events over a real websocket (SEMANTICS.md §7)."""

from __future__ import annotations

from tests.conftest import TEST_ENV
from tests.execution_helpers import execute, wait_for_end, wait_for_status
from tests.graph_builders import create_graph, link, node
from tests.harness import ApiServer, graphql_ws

EVENTS = """subscription($id: ID!, $after: Int) {
  executionEvents(executionId: $id, afterSeq: $after) {
    __typename
    ... on ExecutionStatusEvent { seq execution { id status outputs } }
    ... on NodeExecutionEvent { seq executionId nodeExecution { id nodeId status error } }
  } }"""
GRAPH_EVENTS = """subscription($id: ID!) {
  graphExecutionEvents(graphId: $id) { seq execution { id status graphId } } }"""


async def collect(ws, query, variables, timeout: float = 30.0) -> tuple[list[dict], str]:
    """Every event until the stream ends; returns (events, how it ended)."""
    op_id = await ws.subscribe(query, variables)
    events = []
    async for message in ws.results(op_id, timeout=timeout):
        if message["type"] == "next":
            payload = message["payload"]
            assert "errors" not in payload, payload
            events.append(next(iter(payload["data"].values())))
        else:
            return events, message["type"] if message["type"] != "error" else str(message)
    return events, "?"


def auth(user) -> dict:
    return {"Authorization": f"Bearer {user.token}"}


async def test_snapshot_first_then_every_event_in_order_until_the_end(api, gql, user, worker):
    graph = await create_graph(gql, user)
    async with graphql_ws(api.ws_url, auth(user)) as ws:
        started = await execute(gql, user, graph["id"], {"text": "hi"})
        events, ended = await collect(ws, EVENTS, {"id": started["id"]})
    assert ended == "complete"
    first = events[0]
    assert first["__typename"] == "ExecutionStatusEvent"
    assert first["execution"]["id"] == started["id"]
    rest = events[1:]
    seqs = [e["seq"] for e in rest]
    # Live events follow the snapshot's seq without gap or repeat.
    assert seqs == list(range(first["seq"] + 1, first["seq"] + 1 + len(rest)))
    last = events[-1]
    assert last["__typename"] == "ExecutionStatusEvent"
    assert last["execution"]["status"] == "COMPLETED"
    assert last["execution"]["outputs"] == {"result": ["hi"]}


async def test_resume_after_seq_has_no_gap_and_no_duplicate(api, gql, user, worker):
    graph = await create_graph(gql, user)
    started = await execute(gql, user, graph["id"], {"text": "again"})
    await wait_for_end(gql, user, started["id"])
    async with graphql_ws(api.ws_url, auth(user)) as ws:
        # afterSeq=0: every event from the first, no snapshot.
        full, ended = await collect(ws, EVENTS, {"id": started["id"], "after": 0})
        assert ended == "complete"
        assert [e["seq"] for e in full] == list(range(1, len(full) + 1))
        assert full[0]["execution"]["status"] == "QUEUED"
        assert full[-1]["execution"]["status"] == "COMPLETED"
        for k in (1, 3, len(full) - 1):
            resumed, ended = await collect(ws, EVENTS, {"id": started["id"], "after": k})
            assert ended == "complete"
            # No snapshot: exactly the events after k, the same ones as before.
            assert [e["seq"] for e in resumed] == list(range(k + 1, len(full) + 1))
            assert resumed == full[k:]
        # Resuming after the last event: nothing is missing, the stream just ends.
        resumed, ended = await collect(ws, EVENTS, {"id": started["id"], "after": len(full)})
        assert (resumed, ended) == ([], "complete")
        # Without afterSeq an ended execution gives its snapshot (carrying the
        # current seq) and completes.
        only, ended = await collect(ws, EVENTS, {"id": started["id"]})
        assert ended == "complete" and len(only) == 1
        assert only[0]["seq"] == len(full)
        assert only[0]["execution"]["status"] == "COMPLETED"


async def test_after_seq_outside_zero_to_the_current_seq_is_bad_user_input(api, gql, user, worker):
    graph = await create_graph(gql, user)
    started = await execute(gql, user, graph["id"], {"text": "x"})
    await wait_for_end(gql, user, started["id"])
    async with graphql_ws(api.ws_url, auth(user)) as ws:
        full, _ = await collect(ws, EVENTS, {"id": started["id"], "after": 0})
        for after in (-1, -2, -(2**31), len(full) + 1, 2**31 - 1):
            op_id = await ws.subscribe(EVENTS, {"id": started["id"], "after": after})
            messages = [m async for m in ws.results(op_id)]
            assert messages[0]["type"] in ("next", "error"), messages
            payload = messages[0]["payload"]
            errors = payload if isinstance(payload, list) else payload["errors"]
            assert errors[0]["extensions"]["code"] == "BAD_USER_INPUT", (after, errors)
            assert str(len(full)) in errors[0]["message"]


async def test_a_client_that_reconnects_with_the_highest_seq_it_saw_misses_nothing(
    api, gql, user, worker
):
    """Read a running execution's stream, drop the connection part-way, resume
    with afterSeq = the highest seq seen: together, every event once, in order."""
    graph = await create_graph(
        gql,
        user,
        {
            "name": "three waits",
            "nodes": [
                node("a", "Wait", input="x", seconds=0.3),
                node("b", "Wait", seconds=0.3),
                node("o", "AgentOutput", name="o"),
            ],
            "links": [link("a", "output", "b", "input"), link("b", "output", "o", "value")],
        },
    )
    started = await execute(gql, user, graph["id"])
    seen: list[dict] = []
    async with graphql_ws(api.ws_url, auth(user)) as ws:
        op_id = await ws.subscribe(EVENTS, {"id": started["id"]})
        async for message in ws.results(op_id, timeout=30):
            assert message["type"] == "next", message
            seen.append(message["payload"]["data"]["executionEvents"])
            if len(seen) == 3:
                break  # the connection goes away mid-run
    highest = max(e["seq"] for e in seen)
    async with graphql_ws(api.ws_url, auth(user)) as ws:
        rest, ended = await collect(ws, EVENTS, {"id": started["id"], "after": highest})
        assert ended == "complete"
        full, _ = await collect(ws, EVENTS, {"id": started["id"], "after": 0})
    seqs = [e["seq"] for e in seen] + [e["seq"] for e in rest]
    # Strictly increasing across both connections, and nothing after the snapshot missing.
    assert seqs == sorted(set(seqs)), seqs
    assert [e["seq"] for e in rest] == list(range(highest + 1, len(full) + 1))
    assert rest == full[highest:]
    assert rest[-1]["execution"]["status"] == "COMPLETED"


async def test_subscriber_joining_mid_run_sees_the_rest(api, gql, user, worker):
    graph = await create_graph(
        gql,
        user,
        {
            "name": "slow",
            "nodes": [
                node("w", "Wait", input="done", seconds=1),
                node("o", "AgentOutput", name="o"),
            ],
            "links": [link("w", "output", "o", "value")],
        },
    )
    started = await execute(gql, user, graph["id"])
    await wait_for_status(gql, user, started["id"], {"RUNNING"})
    async with graphql_ws(api.ws_url, auth(user)) as ws:
        events, ended = await collect(ws, EVENTS, {"id": started["id"]})
    assert ended == "complete"
    assert events[0]["execution"]["status"] in ("RUNNING", "COMPLETED")
    assert events[-1]["execution"]["status"] == "COMPLETED"
    assert events[-1]["execution"]["outputs"] == {"o": ["done"]}


async def test_graph_execution_events_stream_every_run_of_the_graph(api, gql, user, worker):
    graph = await create_graph(gql, user)
    async with graphql_ws(api.ws_url, auth(user)) as ws:
        op_id = await ws.subscribe(GRAPH_EVENTS, {"id": graph["id"]})
        # The subscription is live once a probe run's end reaches it.
        probe = await execute(gql, user, graph["id"], {"text": "probe"})
        async for message in ws.results(op_id, timeout=30):
            event = message["payload"]["data"]["graphExecutionEvents"]
            if event["execution"] == {
                **event["execution"],
                "id": probe["id"],
                "status": "COMPLETED",
            }:
                break
        runs = [await execute(gql, user, graph["id"], {"text": str(i)}) for i in range(2)]
        seen: dict[str, list[str]] = {r["id"]: [] for r in runs}
        async for message in ws.results(op_id, timeout=30):
            event = message["payload"]["data"]["graphExecutionEvents"]
            assert event["execution"]["graphId"] == graph["id"]
            seen[event["execution"]["id"]].append(event["execution"]["status"])
            if all(s and s[-1] == "COMPLETED" for s in seen.values()):
                break
    for statuses in seen.values():
        assert statuses == ["QUEUED", "RUNNING", "COMPLETED"]


async def test_subscribers_of_one_graph_each_get_their_own_selection(api, gql, user, worker):
    """One event's result is executed once per operation and shared by the
    subscribers asking it (schema/executor.py): sockets asking different
    selections of the same event each get theirs, and two asking the same get
    the same."""
    graph = await create_graph(gql, user)
    narrow = """subscription($id: ID!) {
      graphExecutionEvents(graphId: $id) { number: seq execution { id status } } }"""

    async def until_completed(ws, op_id, execution_id: str) -> list[dict]:
        """This run's events on this socket (earlier runs' are skipped)."""
        events = []
        async for message in ws.results(op_id, timeout=30):
            event = message["payload"]["data"]["graphExecutionEvents"]
            if event["execution"]["id"] == execution_id:
                events.append(event)
                if event["execution"]["status"] == "COMPLETED":
                    return events
        return events

    async with (
        graphql_ws(api.ws_url, auth(user)) as ws_wide,
        graphql_ws(api.ws_url, auth(user)) as ws_narrow,
        graphql_ws(api.ws_url, auth(user)) as ws_same,
    ):
        ops = [
            (ws_wide, await ws_wide.subscribe(GRAPH_EVENTS, {"id": graph["id"]})),
            (ws_narrow, await ws_narrow.subscribe(narrow, {"id": graph["id"]})),
            (ws_same, await ws_same.subscribe(GRAPH_EVENTS, {"id": graph["id"]})),
        ]
        # The subscriptions are live once a probe run reached all of them whole.
        while True:
            probe = await execute(gql, user, graph["id"], {"text": "probe"})
            seen = [await until_completed(ws, op_id, probe["id"]) for ws, op_id in ops]
            if all(len(events) == 3 for events in seen):
                break
        started = await execute(gql, user, graph["id"], {"text": "shared"})
        wide, narrowed, same = [
            await until_completed(ws, op_id, started["id"]) for ws, op_id in ops
        ]
    assert [e["execution"] for e in wide] == [
        {"id": started["id"], "status": status, "graphId": graph["id"]}
        for status in ("QUEUED", "RUNNING", "COMPLETED")
    ]
    assert narrowed == [
        {"number": e["seq"], "execution": {"id": started["id"], "status": e["execution"]["status"]}}
        for e in wide
    ]
    assert same == wide


async def test_events_reach_subscribers_on_another_api_process(api, gql, user, worker):
    second = ApiServer(TEST_ENV)
    await second.start()
    try:
        graph = await create_graph(gql, user)
        async with graphql_ws(second.ws_url, auth(user)) as ws:
            started = await execute(gql, user, graph["id"], {"text": "far"})
            events, ended = await collect(ws, EVENTS, {"id": started["id"]})
        assert ended == "complete"
        assert events[-1]["execution"]["outputs"] == {"result": ["far"]}
    finally:
        await second.stop()


async def test_subscriptions_obey_ownership_and_key_permissions(api, gql, user, new_user, worker):
    other = new_user()
    graph = await create_graph(gql, other)
    started = await execute(gql, other, graph["id"], {"text": "secret"})
    async with graphql_ws(api.ws_url, auth(user)) as ws:
        for query, variables in (
            (EVENTS, {"id": started["id"]}),
            (GRAPH_EVENTS, {"id": graph["id"]}),
        ):
            op_id = await ws.subscribe(query, variables)
            messages = [m async for m in ws.results(op_id)]
            errors = messages[0]["payload"]
            errors = errors if isinstance(errors, list) else errors["errors"]
            assert errors[0]["extensions"]["code"] == "NOT_FOUND"
    keys = {}
    for permission in ("READ_GRAPH", "READ_EXECUTION"):
        data = await gql.ok(
            'mutation($p: [ApiKeyPermission!]!) { createApiKey(input: {name: "k", '
            "permissions: $p}) { plainTextKey } }",
            {"p": [permission]},
            token=other.token,
        )
        keys[permission] = data["createApiKey"]["plainTextKey"]
    async with graphql_ws(api.ws_url, {"X-API-Key": keys["READ_GRAPH"]}) as ws:
        op_id = await ws.subscribe(EVENTS, {"id": started["id"]})
        messages = [m async for m in ws.results(op_id)]
        errors = messages[0]["payload"]
        errors = errors if isinstance(errors, list) else errors["errors"]
        assert errors[0]["extensions"]["code"] == "FORBIDDEN"
    await wait_for_end(gql, other, started["id"])
    async with graphql_ws(api.ws_url, {"X-API-Key": keys["READ_EXECUTION"]}) as ws:
        events, ended = await collect(ws, EVENTS, {"id": started["id"]})
    assert ended == "complete" and events[0]["execution"]["status"] == "COMPLETED"
