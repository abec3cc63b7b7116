"""Malformed and refused messages on every transport: a clear code, a clean
close, nothing in the log."""

from __future__ import annotations

import asyncio
import contextlib
import json

import httpx
import pytest
import websockets

from tests.execution_helpers import execute
from tests.graph_builders import create_graph
from tests.harness import (
    MULTIPART_ACCEPT,
    GraphQLClient,
    closed_with,
    graphql_ws,
    multipart_parts,
    sse_events,
    until_two_fit,
)
from tests.sockets.helpers import (
    ME,
    SELECTIVE,
    WATCH,
    _codes,
    assert_clean_log,
    auth,
)


def _deep_query(kind: str) -> str:
    inner = "id"
    for _ in range(30):
        inner = f"execution {{ {inner} }}"
    if kind == "subscription":
        return f'subscription {{ graphExecutionEvents(graphId: "x") {{ {inner} }} }}'
    return "{ " + f'graph(id: "x") {{ {inner} }} }}'


def _refusals(kind: str) -> list[tuple[str, dict, str]]:
    """(name, request body, expected code)."""
    one = WATCH if kind == "subscription" else ME
    two = (
        'subscription A { graphExecutionEvents(graphId: "x") { __typename } } '
        'subscription B { graphExecutionEvents(graphId: "y") { __typename } }'
        if kind == "subscription"
        else "query A { me { id } } query B { me { email } }"
    )
    return [
        ("too deep", {"query": _deep_query(kind)}, "QUERY_TOO_COMPLEX"),
        ("too long", {"query": one + " " * 100_001, "variables": {"g": "x"}}, "QUERY_TOO_COMPLEX"),
        ("syntax", {"query": kind + " { ", "variables": {}}, "BAD_USER_INPUT"),
        ("unknown field", {"query": kind + " { nope }"}, "BAD_USER_INPUT"),
        ("several unnamed", {"query": two}, "BAD_USER_INPUT"),
        ("wrong name", {"query": two, "operationName": "C"}, "BAD_USER_INPUT"),
        ("NUL name", {"query": two, "operationName": "A\u0000"}, "BAD_USER_INPUT"),
        ("NUL variable", {"query": one, "variables": {"g": "x\u0000"}}, "BAD_USER_INPUT"),
        ("missing variable", {"query": WATCH, "variables": {}}, "BAD_USER_INPUT"),
    ]


async def _ws_errors(url, headers, protocol, body) -> list[dict]:
    start = "subscribe" if protocol == "graphql-transport-ws" else "start"
    async with websockets.connect(url, subprotocols=[protocol]) as connection:
        await connection.send(json.dumps({"type": "connection_init", "payload": headers}))
        assert json.loads(await connection.recv())["type"] == "connection_ack"
        await connection.send(json.dumps({"id": "1", "type": start, "payload": body}))
        async with asyncio.timeout(10):
            while True:
                message = json.loads(await connection.recv())
                if message.get("type") in ("ping", "ka"):
                    continue
                assert message["id"] == "1", message
                if message["type"] == "error":
                    payload = message["payload"]
                    return payload if isinstance(payload, list) else [payload]
                if message["type"] in ("next", "data"):
                    return message["payload"].get("errors") or []
                raise AssertionError(message)


@pytest.mark.parametrize("protocol", ["graphql-transport-ws", "graphql-ws"])
@pytest.mark.parametrize("case", range(9))
async def test_refusals_carry_their_code_over_websockets(api, user, protocol, case):
    name, body, code = _refusals("subscription")[case]
    errors = await _ws_errors(api.ws_url, auth(user), protocol, body)
    assert _codes(errors) == [code], (name, errors)


@pytest.mark.parametrize("case", range(9))
async def test_refusals_carry_their_code_over_http(api, gql, user, case):
    name, body, code = _refusals("query")[case]
    if name == "missing variable":
        body = {"query": "query($g: ID!) { graph(id: $g) { id } }", "variables": {}}
    response = await gql.http.post("/graphql", json=body, headers=auth(user))
    assert response.status_code in (200, 400), (name, response.status_code, response.text)
    assert _codes(response.json()["errors"]) == [code], (name, response.text)


@pytest.mark.parametrize("transport", ["multipart", "sse"])
@pytest.mark.parametrize("case", range(9))
async def test_refusals_carry_their_code_over_http_streams(api, user, transport, case):
    name, body, code = _refusals("subscription")[case]
    accept = MULTIPART_ACCEPT if transport == "multipart" else "text/event-stream"
    async with (
        httpx.AsyncClient(base_url=api.base_url, timeout=15) as client,
        client.stream(
            "POST", "/graphql", json=body, headers={**auth(user), "Accept": accept}
        ) as response,
    ):
        if response.headers["content-type"].startswith("application/json"):
            errors = json.loads(await response.aread())["errors"]
        elif transport == "multipart":
            errors = None
            async for part in multipart_parts(response):
                if part:
                    errors = part.get("errors") or (part.get("payload") or {}).get("errors")
                    break
        else:
            errors = None
            async for event, data in sse_events(response):
                if event == "next":
                    errors = json.loads(data).get("errors")
                    break
    assert errors is not None, name
    assert _codes(errors) == [code], (name, errors)


# --- mutations' rate limit and the graphs cache on every transport ---------

MUTATE = (
    "mutation { "
    + " ".join(
        f'm{n}: createGraph(graph: {{name: "x", nodes: [], links: []}}) {{ id }}' for n in range(7)
    )
    + " }"
)
GRAPHS = """query Mine { graphs(first: 10) { totalCount edges { node { id name version } } } }"""


async def test_the_mutation_limit_answers_rate_limited_on_every_transport(capped, new_user):
    person = new_user()
    client = GraphQLClient(capped.base_url)
    try:
        body = await client.execute(MUTATE, token=person.token)
        assert _codes(body["errors"]) == ["RATE_LIMITED"], body
        assert body["data"] is None
        errors = await _ws_errors(
            capped.ws_url, auth(person), "graphql-transport-ws", {"query": MUTATE}
        )
        assert _codes(errors) == ["RATE_LIMITED"], errors
        # Legacy graphql-ws carries subscriptions only.
        errors = await _ws_errors(capped.ws_url, auth(person), "graphql-ws", {"query": MUTATE})
        assert _codes(errors) == ["BAD_USER_INPUT"], errors
        # HTTP streams.
        # Multipart carries no mutations; SSE does, and limits them.
        for accept, code in (
            (MULTIPART_ACCEPT, "BAD_USER_INPUT"),
            ("text/event-stream", "RATE_LIMITED"),
        ):
            response = await client.http.post(
                "/graphql", json={"query": MUTATE}, headers={**auth(person), "Accept": accept}
            )
            assert f'"code":"{code}"' in response.text.replace(" ", ""), response.text
            assert "INTERNAL" not in response.text, response.text
        # Nothing was made.
        data = await client.ok(GRAPHS, token=person.token)
        assert data["graphs"]["totalCount"] == 0
    finally:
        await client.aclose()


async def _ws_data(url, headers, query, variables=None) -> dict:
    async with graphql_ws(url, headers) as ws:
        messages = await ws.request(query, variables)
    assert messages[0]["type"] == "next", messages
    assert "errors" not in messages[0]["payload"], messages
    return messages[0]["payload"]["data"]


async def test_the_graphs_cache_answers_alike_over_http_and_websockets(api, gql, new_user):
    person, other = new_user(), new_user()
    await gql.ok(ME, token=other.token)
    await create_graph(gql, person)
    first = (await gql.post(GRAPHS, token=person.token)).json()["data"]
    again = await gql.post(GRAPHS, token=person.token)
    assert again.headers.get("x-graphs-cache") == "hit"
    assert again.json()["data"] == first
    for protocol_query in (GRAPHS,):
        assert await _ws_data(api.ws_url, auth(person), protocol_query) == first
    # Another user asking the same text over a socket sees only theirs.
    assert (await _ws_data(api.ws_url, auth(other), GRAPHS))["graphs"]["totalCount"] == 0
    # A new graph is seen at once, on both.
    await create_graph(gql, person)
    after = (await gql.post(GRAPHS, token=person.token)).json()["data"]
    assert after["graphs"]["totalCount"] == first["graphs"]["totalCount"] + 1
    assert await _ws_data(api.ws_url, auth(person), GRAPHS) == after
    # Errors beside a cached answer keep their codes.
    body = await gql.execute(GRAPHS + " query Other { me { id } }", token=person.token)
    assert _codes(body["errors"]) == ["BAD_USER_INPUT"]


@pytest.mark.parametrize("protocol", ["graphql-transport-ws", "graphql-ws"])
@pytest.mark.parametrize(
    "frame",
    [
        b"\x00\x01binary",
        "not json",
        "[" * 100_000,
        "1" * 5000,
        "null",
        "[]",
        '{"type": null}',
        '{"type": "subscribe"}',
        '{"type": "subscribe", "id": 5, "payload": "x"}',
        '{"type": "start", "id": "1", "payload": []}',
        '{"type": "complete", "id": {"a": 1}}',
        '{"type": "connection_init", "payload": "x"}',
        '{"type": "connection_init", "payload": {"Authorization": 5, "X-API-Key": []}}',
        '{"type": "ping", "payload": 1e999999}',
    ],
)
async def test_garbage_frames_close_cleanly_and_hold_nothing(capped, capped_user, protocol, frame):
    headers = auth(capped_user)
    async with websockets.connect(capped.ws_url, subprotocols=[protocol]) as connection:
        await connection.send(json.dumps({"type": "connection_init", "payload": headers}))
        assert json.loads(await connection.recv())["type"] == "connection_ack"
        await connection.send(frame)
        # Closed with a code, or the garbage ignored and the socket still answering.
        with contextlib.suppress(websockets.ConnectionClosed):
            start = "subscribe" if protocol == "graphql-transport-ws" else "start"
            await connection.send(
                json.dumps(
                    {
                        "id": "me",
                        "type": start,
                        "payload": {"query": WATCH, "variables": {"g": "x"}},
                    }
                )
            )
            async with asyncio.timeout(10):
                while True:
                    message = json.loads(await connection.recv())
                    if message.get("id") == "me":
                        break
    await until_two_fit(capped, headers)
    assert_clean_log(capped)


@pytest.mark.parametrize("frame", ["null", "[]", "1", '"text"'])
async def test_an_anonymous_socket_sending_non_object_json_is_closed_with_4400(capped, frame):
    """graphql-transport-ws: a message that is not a valid object closes the
    socket with 4400 (Invalid message); before any sign-in, so anyone can send it."""
    async with websockets.connect(capped.ws_url, subprotocols=["graphql-transport-ws"]) as ws:
        await ws.send(frame)
        code = await closed_with(ws)
    assert code == 4400, code
    assert_clean_log(capped)


async def test_legacy_operations_before_connection_init_are_refused(api, gql, user, worker):
    """graphql-ws signs in with connection_init: an operation started before it
    must not run, even with credentials in the upgrade headers (it would hold
    no connection slot)."""
    graph = await create_graph(gql, user)
    answers = []
    async with websockets.connect(
        api.ws_url, subprotocols=["graphql-ws"], additional_headers=auth(user)
    ) as connection:
        await connection.send(
            json.dumps(
                {
                    "id": "early",
                    "type": "start",
                    "payload": {"query": SELECTIVE, "variables": {"id": graph["id"], "full": True}},
                }
            )
        )
        run = await execute(gql, user, graph["id"], {"text": "early"})
        with contextlib.suppress(websockets.ConnectionClosed, TimeoutError):
            # Until the socket closes (its connection_init deadline) or answers.
            async with asyncio.timeout(8):
                while True:
                    message = json.loads(await connection.recv())
                    if message.get("type") != "ka":
                        answers.append(message)
                        break
    for message in answers:
        assert message["type"] in ("error", "connection_error"), (run["id"], message)
