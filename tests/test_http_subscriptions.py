"""Subscriptions over HTTP (SEMANTICS.md §7): Apollo's multipart protocol and
GraphQL over SSE, with the websocket's sign-in, ownership, permissions and
limits; a subscription sent as a plain request is refused with a clear code."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import httpx
import pytest
import websockets

from tests.conftest import TEST_ENV
from tests.execution_helpers import execute, wait_for_end
from tests.graph_builders import create_graph, link, node
from tests.harness import (
    MULTIPART_ACCEPT,
    ApiServer,
    GraphQLClient,
    graphql_ws,
    multipart_parts,
    sse_events,
)

EVENTS = """subscription($id: ID!, $after: Int) {
  executionEvents(executionId: $id, afterSeq: $after) {
    __typename
    ... on ExecutionStatusEvent { seq execution { id status outputs } }
    ... on NodeExecutionEvent { seq nodeExecution { id nodeId status } }
  } }"""
GRAPH_EVENTS = """subscription($id: ID!) {
  graphExecutionEvents(graphId: $id) { seq execution { id status } } }"""

SLOW = {
    "name": "slow",
    "nodes": [
        node("w", "Wait", input="done", seconds=0.5),
        node("o", "AgentOutput", name="o"),
    ],
    "links": [link("w", "output", "o", "value")],
}


def bearer(user) -> dict[str, str]:
    return {"Authorization": f"Bearer {user.token}"}


def body(query: str, variables: dict) -> dict:
    return {"query": query, "variables": variables}


async def multipart_payloads(http: httpx.AsyncClient, query, variables, headers) -> list[dict]:
    """Every payload of one multipart subscription until the server ends it."""
    payloads = []
    async with http.stream(
        "POST",
        "/graphql",
        json=body(query, variables),
        headers={**headers, "Accept": MULTIPART_ACCEPT},
    ) as response:
        assert response.status_code == 200
        content_type = response.headers["content-type"]
        assert content_type.startswith("multipart/mixed"), content_type
        assert "boundary=graphql" in content_type and "subscriptionSpec=1.0" in content_type
        async for part in multipart_parts(response):
            if part:  # {} is a heartbeat
                payloads.append(part["payload"])
    return payloads


async def test_multipart_subscription_streams_the_run_live_and_resumes(api, gql, user, worker):
    graph = await create_graph(gql, user, SLOW)
    started = await execute(gql, user, graph["id"])
    payloads = await multipart_payloads(gql.http, EVENTS, {"id": started["id"]}, bearer(user))
    events = [p["data"]["executionEvents"] for p in payloads]
    assert all("errors" not in p for p in payloads), payloads
    snapshot, rest = events[0], events[1:]
    assert snapshot["__typename"] == "ExecutionStatusEvent"
    assert [e["seq"] for e in rest] == list(
        range(snapshot["seq"] + 1, snapshot["seq"] + 1 + len(rest))
    )
    assert events[-1]["execution"] == {
        "id": started["id"],
        "status": "COMPLETED",
        "outputs": {"o": ["done"]},
    }

    full = await multipart_payloads(
        gql.http, EVENTS, {"id": started["id"], "after": 0}, bearer(user)
    )
    full = [p["data"]["executionEvents"] for p in full]
    assert [e["seq"] for e in full] == list(range(1, len(full) + 1))
    resumed = await multipart_payloads(
        gql.http, EVENTS, {"id": started["id"], "after": 2}, bearer(user)
    )
    assert [p["data"]["executionEvents"] for p in resumed] == full[2:]


async def test_multipart_stream_starts_with_a_heartbeat_and_ends_with_the_closing_boundary(
    api, gql, user, worker
):
    graph = await create_graph(gql, user, SLOW)
    started = await execute(gql, user, graph["id"])
    await wait_for_end(gql, user, started["id"])
    async with gql.http.stream(
        "POST",
        "/graphql",
        json=body(EVENTS, {"id": started["id"]}),
        headers={**bearer(user), "Accept": MULTIPART_ACCEPT},
    ) as response:
        raw = "".join([chunk async for chunk in response.aiter_text()])
    # Heartbeats are empty JSON objects that keep proxies from closing an idle stream.
    assert raw.startswith("\r\nContent-Type: application/json; charset=utf-8\r\n")
    assert "\r\n\r\n{}\r\n--graphql" in raw
    assert raw.endswith("\r\n--graphql--\r\n")


async def test_sse_subscription_streams_the_run(api, gql, user, worker):
    graph = await create_graph(gql, user, SLOW)
    started = await execute(gql, user, graph["id"])
    async with gql.http.stream(
        "POST",
        "/graphql",
        json=body(EVENTS, {"id": started["id"]}),
        headers={**bearer(user), "Accept": "text/event-stream"},
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        received = [item async for item in sse_events(response)]
    kinds = [kind for kind, _ in received]
    assert kinds[-1] == "complete" and set(kinds[:-1]) == {"next"}
    events = [json.loads(data)["data"]["executionEvents"] for _, data in received[:-1]]
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    assert events[-1]["execution"]["status"] == "COMPLETED"


@pytest.mark.parametrize("method", ["POST", "GET"])
async def test_a_subscription_over_a_plain_request_is_refused_with_a_code(api, gql, user, method):
    query = "subscription($id: ID!) { executionEvents(executionId: $id) { __typename } }"
    variables = {"id": "00000000-0000-0000-0000-000000000000"}

    async def ask(headers: dict[str, str]) -> dict:
        headers = {**headers, "Accept": "application/json"}
        if method == "POST":
            response = await gql.http.post("/graphql", json=body(query, variables), headers=headers)
        else:
            params = {"query": query, "variables": json.dumps(variables)}
            response = await gql.http.get("/graphql", params=params, headers=headers)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/json")
        [error] = response.json()["errors"]
        return error

    signed_in = await ask(bearer(user))
    assert signed_in["extensions"]["code"] == "BAD_USER_INPUT"
    assert "websocket" in signed_in["message"] and "multipart" in signed_in["message"]
    assert (await ask({}))["extensions"]["code"] == "UNAUTHENTICATED"
    bad = await ask({"Authorization": "Bearer not-a-token"})
    assert bad["extensions"]["code"] == "UNAUTHENTICATED"
    # Nothing was logged as an internal error.
    assert "unexpected error" not in api.log()


async def test_http_subscriptions_check_sign_in_ownership_and_key_permissions(
    api, gql, user, new_user, worker
):
    other = new_user()
    graph = await create_graph(gql, other)
    started = await execute(gql, other, graph["id"], {"text": "secret"})

    async def first_error(query, variables, headers, accept) -> dict:
        async with gql.http.stream(
            "POST", "/graphql", json=body(query, variables), headers={**headers, "Accept": accept}
        ) as response:
            if accept == MULTIPART_ACCEPT:
                parts = [p async for p in multipart_parts(response) if p]
                return parts[0]["payload"]["errors"][0]
            items = [data async for kind, data in sse_events(response) if kind == "next"]
            return json.loads(items[0])["errors"][0]

    for accept in (MULTIPART_ACCEPT, "text/event-stream"):
        variables = {"id": started["id"]}
        anonymous = await first_error(EVENTS, variables, {}, accept)
        assert anonymous["extensions"]["code"] == "UNAUTHENTICATED"
        forged = await first_error(EVENTS, variables, {"Authorization": "Bearer x.y.z"}, accept)
        assert forged["extensions"]["code"] == "UNAUTHENTICATED"
        for query, v in ((EVENTS, variables), (GRAPH_EVENTS, {"id": graph["id"]})):
            stranger = await first_error(query, v, bearer(user), accept)
            assert stranger["extensions"]["code"] == "NOT_FOUND"

    key = (
        await gql.ok(
            'mutation { createApiKey(input: {name: "k", permissions: [READ_GRAPH]}) '
            "{ plainTextKey } }",
            token=other.token,
        )
    )["createApiKey"]["plainTextKey"]
    for accept in (MULTIPART_ACCEPT, "text/event-stream"):
        lacking = await first_error(EVENTS, {"id": started["id"]}, {"X-API-Key": key}, accept)
        assert lacking["extensions"]["code"] == "FORBIDDEN"


async def _open_stream(stack, http, graph_id, headers) -> AsyncIterator[dict]:
    """A graph subscription over multipart, open until `stack` closes; its parts.
    Keep the returned iterator: once collected it would close the stream."""
    response = await stack.enter_async_context(
        http.stream(
            "POST",
            "/graphql",
            json=body(GRAPH_EVENTS, {"id": graph_id}),
            headers={**headers, "Accept": MULTIPART_ACCEPT},
        )
    )
    if response.status_code != 200:
        raise _Refused(response.status_code)
    parts = multipart_parts(response)
    assert await anext(parts) == {}  # the first heartbeat: the stream is open
    return parts


class _Refused(Exception):
    pass


async def test_http_streams_and_websockets_share_the_per_user_connection_cap(database, new_user):
    server = ApiServer(TEST_ENV, {"MAX_WEBSOCKETS_PER_USER": "2"})
    await server.start()
    client = GraphQLClient(server.base_url)
    person = new_user()
    try:
        graph = await create_graph(client, person)
        async with contextlib.AsyncExitStack() as stack:
            streams = [
                await _open_stream(stack, client.http, graph["id"], bearer(person))
                for _ in range(2)
            ]
            # A third stream is refused before it starts: 429 with RATE_LIMITED...
            refused = await client.http.post(
                "/graphql",
                json=body(GRAPH_EVENTS, {"id": graph["id"]}),
                headers={**bearer(person), "Accept": MULTIPART_ACCEPT},
            )
            assert refused.status_code == 429
            assert refused.json()["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
            # ... and so is a websocket of the same user.
            with pytest.raises(websockets.ConnectionClosed) as closed:
                async with graphql_ws(server.ws_url, bearer(person), expect_ack=False) as ws:
                    await ws.receive()
            assert closed.value.rcvd.code == 4429
            assert len(streams) == 2
        # Closed streams give their slots back (the server notices the disconnect).
        await _wait_until_accepted(server, client, graph["id"], bearer(person), count=2)
    finally:
        await client.aclose()
        await server.stop()


async def _wait_until_accepted(server, client, graph_id, headers, count, timeout=30.0) -> None:
    """Polls until `count` streams can be open at once again."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        async with contextlib.AsyncExitStack() as stack:
            try:
                streams = [
                    await _open_stream(stack, client.http, graph_id, headers) for _ in range(count)
                ]
                assert len(streams) == count
                return
            except _Refused:
                pass
        assert asyncio.get_running_loop().time() < deadline, "slots were never given back"
        await asyncio.sleep(0.05)
