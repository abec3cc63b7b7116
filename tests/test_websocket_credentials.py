"""Credentials on open websockets (issue 13, findings 2, 4 and 7): a socket
must sign in at connection_init, within a deadline, on both protocols; a key
revoked or suspended, or a token expired, closes it with 4403, on every API
process within seconds, for the next operation and for a subscription that
is already running."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import pytest
import websockets

from app.auth import issue_jwt
from tests.conftest import TEST_ENV
from tests.graph_builders import create_graph
from tests.harness import (
    MULTIPART_ACCEPT,
    ApiServer,
    GraphQLClient,
    closed_with,
    graphql_ws,
    multipart_parts,
    sse_events,
)

WATCH = "subscription($g: ID!) { graphExecutionEvents(graphId: $g) { __typename } }"
ME = "{ me { id } }"
KEY = """mutation($p: [ApiKeyPermission!]!) {
  createApiKey(input: {name: "socket", permissions: $p}) { plainTextKey apiKey { id } } }"""
REVOKE = "mutation($id: ID!) { revokeApiKey(id: $id) { status } }"
SUSPEND = "mutation($id: ID!) { suspendApiKey(id: $id) { status } }"
# Long enough for a busy machine; the design closes within about four seconds.
CLOSE_DEADLINE = 15.0


async def _key(gql, user, permissions=("READ_EXECUTION", "READ_GRAPH")):
    made = await gql.ok(KEY, {"p": list(permissions)}, token=user.token)
    return made["createApiKey"]["plainTextKey"], made["createApiKey"]["apiKey"]["id"]


@pytest.fixture(scope="module")
async def quick_init(database):
    """A server that waits one second for connection_init."""
    async with ApiServer(TEST_ENV, {"WEBSOCKET_INIT_TIMEOUT_SECONDS": "1"}) as server:
        yield server


@pytest.mark.parametrize("protocol", ["graphql-transport-ws", "graphql-ws"])
async def test_a_socket_that_never_initialises_is_closed(quick_init, protocol):
    """Finding 4: legacy graphql-ws sockets without connection_init never timed out."""
    async with websockets.connect(quick_init.ws_url, subprotocols=[protocol]) as connection:
        assert await closed_with(connection) == 4408


async def test_legacy_socket_without_credentials_is_refused(api):
    """Finding 4: 300 anonymous sockets were acknowledged and kept."""
    async with websockets.connect(api.ws_url, subprotocols=["graphql-ws"]) as connection:
        await connection.send(json.dumps({"type": "connection_init", "payload": {}}))
        message = json.loads(await connection.recv())
        assert message == {"type": "connection_error", "payload": {"code": "UNAUTHENTICATED"}}
        assert await closed_with(connection) == 4403


@pytest.mark.parametrize("key", ["agpt_" + "\ud800" * 43, "\ud800", "agpt_\x00"])
async def test_unencodable_key_in_connection_init_closes_with_4403(api, key):
    """Finding 7: a lone surrogate in X-API-Key dropped the socket with no close code."""
    async with websockets.connect(api.ws_url, subprotocols=["graphql-transport-ws"]) as connection:
        await connection.send(
            json.dumps({"type": "connection_init", "payload": {"X-API-Key": key}})
        )
        assert await closed_with(connection) == 4403


async def test_revoking_a_key_closes_its_sockets_on_every_api_process(api, gql, user):
    """Finding 2: after revokeApiKey the same socket still read executions and
    streamed events. The key is revoked through one API process; a socket on
    another, in the middle of a subscription, is closed, and HTTP there stops
    taking the key."""
    graph = await create_graph(gql, user)
    key, key_id = await _key(gql, user)
    async with ApiServer(TEST_ENV) as other:
        other_gql = GraphQLClient(other.base_url)
        try:
            async with graphql_ws(other.ws_url, {"X-API-Key": key}) as ws:
                await ws.subscribe(WATCH, {"g": graph["id"]})
                assert await other_gql.ok("{ graphs { totalCount } }", api_key=key)
                await gql.ok(REVOKE, {"id": key_id}, token=user.token)
                assert await closed_with(ws.connection) == 4403
            deadline = asyncio.get_running_loop().time() + CLOSE_DEADLINE
            while await _code(other_gql, key) != "UNAUTHENTICATED":
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.1)
        finally:
            await other_gql.aclose()


async def _code(gql, key) -> str | None:
    body = await gql.execute("{ graphs { totalCount } }", api_key=key)
    return body["errors"][0]["extensions"]["code"] if body.get("errors") else None


async def test_a_suspended_key_can_start_no_further_operation(api, gql, user):
    key, key_id = await _key(gql, user)
    async with graphql_ws(api.ws_url, {"X-API-Key": key}) as ws:
        first = await ws.request("{ graphs { totalCount } }")
        assert first[0]["type"] == "next"
        await gql.ok(SUSPEND, {"id": key_id}, token=user.token)
        await ws.subscribe("{ graphs { totalCount } }")
        assert await closed_with(ws.connection) == 4403


async def test_an_expired_token_closes_the_socket(api, gql, settings, new_user):
    """Finding 2: a JWT 8 s past `exp` still ran updateTimezone on its socket."""
    person = new_user()
    graph = await create_graph(gql, person)
    short = issue_jwt(settings, person.id, person.email, expires_in=3)
    async with graphql_ws(api.ws_url, {"Authorization": f"Bearer {short}"}) as ws:
        await ws.subscribe(WATCH, {"g": graph["id"]})
        assert await closed_with(ws.connection) == 4403
    assert time.time() >= json.loads(_claims(short))["exp"]
    # A fresh socket with it is refused at connection_init.
    async with graphql_ws(api.ws_url, {"Authorization": f"Bearer {short}"}, expect_ack=False) as ws:
        assert await closed_with(ws.connection) == 4403


async def test_an_operation_after_the_token_expired_closes_the_socket(api, settings, new_user):
    person = new_user()
    short = issue_jwt(settings, person.id, person.email, expires_in=2)
    async with graphql_ws(api.ws_url, {"Authorization": f"Bearer {short}"}) as ws:
        assert (await ws.request(ME))[0]["type"] == "next"
        # The state waited for is the clock passing the token's `exp`.
        await asyncio.sleep(max(0.0, json.loads(_claims(short))["exp"] + 0.1 - time.time()))
        try:
            await ws.subscribe('mutation { updateTimezone(timezone: "Asia/Tokyo") { id } }')
        except websockets.ConnectionClosed as closed:
            code = closed.rcvd.code  # the periodic re-check was first
        else:
            code = await closed_with(ws.connection)
        assert code == 4403
    async with graphql_ws(api.ws_url, {"Authorization": f"Bearer {person.token}"}) as ws:
        assert (await ws.request("{ me { timezone } }"))[0]["payload"]["data"] == {
            "me": {"timezone": "UTC"}
        }


def _claims(token: str) -> str:
    import base64

    payload = token.split(".")[1]
    return base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).decode()


NARROW = """mutation($id: ID!, $p: [ApiKeyPermission!]!) {
  updateApiKeyPermissions(id: $id, permissions: $p) { id } }"""
EVENTS = "subscription($g: ID!) { graphExecutionEvents(graphId: $g) { seq } }"
STREAMS = {"multipart": MULTIPART_ACCEPT, "sse": "text/event-stream"}


async def _last_stream_result(http, headers: dict, graph_id: str, accept: str, started) -> dict:
    """Opens a graph subscription over an HTTP stream (it never ends by
    itself: no run is started), calls `started()` once it is open, and returns
    the last result the server sends before it ends the stream."""
    results = []
    async with asyncio.timeout(CLOSE_DEADLINE):
        async with http.stream(
            "POST",
            "/graphql",
            json={"query": EVENTS, "variables": {"g": graph_id}},
            headers={**headers, "Accept": accept},
        ) as response:
            assert response.status_code == 200
            if accept == MULTIPART_ACCEPT:
                parts = multipart_parts(response)
                assert await anext(parts) == {}  # the first heartbeat: open
                await started()
                results = [part["payload"] async for part in parts if part]
            else:
                # SSE sends nothing before the first event; the re-check finds
                # the change whenever it happened.
                await started()
                events = [(kind, data) async for kind, data in sse_events(response)]
                assert events[-1][0] == "complete", events
                results = [json.loads(data) for kind, data in events if kind == "next"]
    assert results, "the stream ended without saying why"
    return results[-1]


@pytest.mark.parametrize("transport", STREAMS)
async def test_revoking_a_key_ends_its_http_streams_on_every_api_process(api, gql, user, transport):
    """An HTTP subscription stream (multipart or SSE) signed in with a key went
    on streaming after the key was revoked: it is re-checked like a websocket
    and ends with UNAUTHENTICATED, here on another API process than the one
    that revoked the key."""
    graph = await create_graph(gql, user)
    key, key_id = await _key(gql, user)
    async with ApiServer(TEST_ENV) as other:
        other_gql = GraphQLClient(other.base_url)
        try:

            async def revoke() -> None:
                await gql.ok(REVOKE, {"id": key_id}, token=user.token)

            last = await _last_stream_result(
                other_gql.http, {"X-API-Key": key}, graph["id"], STREAMS[transport], revoke
            )
        finally:
            await other_gql.aclose()
    assert last["data"] is None
    assert [e["extensions"]["code"] for e in last["errors"]] == ["UNAUTHENTICATED"]


@pytest.mark.parametrize("transport", STREAMS)
async def test_an_expired_token_ends_its_http_stream(api, gql, settings, new_user, transport):
    person = new_user()
    graph = await create_graph(gql, person)
    short = issue_jwt(settings, person.id, person.email, expires_in=3)

    async def nothing() -> None:
        pass

    last = await _last_stream_result(
        gql.http, {"Authorization": f"Bearer {short}"}, graph["id"], STREAMS[transport], nothing
    )
    assert [e["extensions"]["code"] for e in last["errors"]] == ["UNAUTHENTICATED"]
    assert time.time() >= json.loads(_claims(short))["exp"]


async def test_a_key_that_loses_a_permission_ends_the_subscriptions_that_need_it(api, gql, user):
    """A key that lost READ_EXECUTION kept streaming a run's events on an open
    socket and an open stream: both end (4403; FORBIDDEN as the stream's last
    result). A key that gains a permission keeps its socket."""
    graph = await create_graph(gql, user)
    key, key_id = await _key(gql, user)
    async with graphql_ws(api.ws_url, {"X-API-Key": key}) as ws:
        await ws.subscribe(WATCH, {"g": graph["id"]})
        await gql.ok(
            NARROW,
            {"id": key_id, "p": ["READ_EXECUTION", "READ_GRAPH", "READ_BLOCK"]},
            token=user.token,
        )
        # Still open after a re-check that saw the new permission...
        assert (await ws.request("{ blocks { id } }"))[0]["type"] == "next"
        await gql.ok(NARROW, {"id": key_id, "p": ["READ_GRAPH"]}, token=user.token)
        # ... closed once it lost one.
        assert await closed_with(ws.connection) == 4403

    key, key_id = await _key(gql, user)

    async def narrow() -> None:
        await gql.ok(NARROW, {"id": key_id, "p": ["READ_GRAPH"]}, token=user.token)

    last = await _last_stream_result(
        gql.http, {"X-API-Key": key}, graph["id"], MULTIPART_ACCEPT, narrow
    )
    assert [e["extensions"]["code"] for e in last["errors"]] == ["FORBIDDEN"]


async def test_a_watched_stream_whose_reader_leaves_closes_what_it_was_reading():
    """The reader of a watched HTTP stream going away (the client disconnects)
    while the stream waits for its next event must close the event feed it
    reads: otherwise the feed (and the API process's Redis read of that run's
    events) outlives the request."""
    from app.websocket_auth import CredentialWatch, watched_stream

    waiting, closed = asyncio.Event(), asyncio.Event()

    async def events():
        try:
            yield 1
            waiting.set()
            await asyncio.Event().wait()  # no next event comes
            yield 2
        finally:
            closed.set()

    async def still_valid():
        return None

    watch = CredentialWatch(interval=3600)
    stream = watched_stream(watch, events(), still_valid, lambda refusal: refusal)

    async def read() -> None:
        async for _ in stream:
            pass

    reader = asyncio.create_task(read())
    await asyncio.wait_for(waiting.wait(), 10)
    reader.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await reader
    assert closed.is_set()
    await watch.aclose()
