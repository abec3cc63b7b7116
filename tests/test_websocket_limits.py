"""Caps on websockets per user and operations per websocket, on a real uvicorn."""

from __future__ import annotations

import json

import pytest
import websockets

from tests.conftest import TEST_ENV
from tests.graph_builders import create_graph
from tests.harness import ApiServer, GraphQLClient, closed_with, graphql_ws, until_two_fit

WATCH = "subscription($g: ID!) { graphExecutionEvents(graphId: $g) { __typename } }"


async def test_websockets_per_user_and_operations_per_websocket_are_capped(database, new_user):
    server = ApiServer(
        TEST_ENV, {"MAX_WEBSOCKETS_PER_USER": "2", "MAX_OPERATIONS_PER_WEBSOCKET": "2"}
    )
    await server.start()
    client = GraphQLClient(server.base_url)
    person, other = new_user(), new_user()
    auth = {"Authorization": f"Bearer {person.token}"}
    try:
        graph = await create_graph(client, person)
        async with graphql_ws(server.ws_url, auth) as first, graphql_ws(server.ws_url, auth):
            # A third connection of the same user is refused with 4429 ...
            try:
                async with graphql_ws(server.ws_url, auth, expect_ack=False) as third:
                    message = await third.receive()
                    raise AssertionError(f"expected a close, got {message}")
            except websockets.ConnectionClosed as closed:
                assert closed.rcvd.code == 4429
            # ... another user's is not.
            other_auth = {"Authorization": f"Bearer {other.token}"}
            async with graphql_ws(server.ws_url, other_auth):
                pass
            # Two live operations on one connection; a third is refused with a code.
            await first.subscribe(WATCH, {"g": graph["id"]}, op_id="a")
            await first.subscribe(WATCH, {"g": graph["id"]}, op_id="b")
            await first.subscribe(WATCH, {"g": graph["id"]}, op_id="c")
            refused = await first.receive()
            assert refused["type"] == "error" and refused["id"] == "c"
            assert refused["payload"][0]["extensions"]["code"] == "RATE_LIMITED"
        # Closed connections give their slots back: the server notices each close
        # a moment after the client makes it, so ask until two fit again.
        await until_two_fit(server, auth)
    finally:
        await client.aclose()
        await server.stop()


async def _raw_socket(server: ApiServer, protocol: str, headers: dict | None = None):
    return await websockets.connect(
        server.ws_url, subprotocols=[protocol], additional_headers=headers or {}
    )


async def test_sockets_signed_in_by_headers_count_before_connection_init(database, new_user):
    """A socket whose upgrade headers sign it in takes its user's slot at once:
    sockets that never send connection_init are not free until the init timeout."""
    server = ApiServer(
        TEST_ENV, {"MAX_WEBSOCKETS_PER_USER": "2", "WEBSOCKET_INIT_TIMEOUT_SECONDS": "30"}
    )
    await server.start()
    client = GraphQLClient(server.base_url)
    person, other = new_user(), new_user()
    auth = {"Authorization": f"Bearer {person.token}"}
    other_auth = {"Authorization": f"Bearer {other.token}"}
    try:
        await client.ok("{ me { id } }", token=person.token)
        await client.ok("{ me { id } }", token=other.token)
        idle = [await _raw_socket(server, "graphql-transport-ws", auth) for _ in range(2)]
        # Nothing sent on either; a third is closed with 4429 before it says anything.
        third = await _raw_socket(server, "graphql-transport-ws", auth)
        assert await closed_with(third) == 4429
        legacy = await _raw_socket(server, "graphql-ws", auth)
        refusal = json.loads(await legacy.recv())
        assert refusal["type"] == "connection_error", refusal
        assert refusal["payload"]["code"] == "RATE_LIMITED"
        assert await closed_with(legacy) == 4429
        for connection in idle:
            await connection.close()
        await until_two_fit(server, auth)
        # Headers of one user, connection_init of another: the slot follows the
        # sign-in that counts (the payload's), the headers' user gets theirs back.
        switched = new_user()
        await client.ok("{ me { id } }", token=switched.token)
        switched_auth = {"Authorization": f"Bearer {switched.token}"}
        async with graphql_ws(server.ws_url, other_auth, headers=switched_auth):
            async with (
                graphql_ws(server.ws_url, switched_auth),
                graphql_ws(server.ws_url, switched_auth),
            ):
                pass
            async with graphql_ws(server.ws_url, other_auth):
                pass
            try:
                async with (
                    graphql_ws(server.ws_url, other_auth),
                    graphql_ws(server.ws_url, other_auth, expect_ack=False) as over,
                ):
                    raise AssertionError(f"expected a close, got {await over.receive()}")
            except websockets.ConnectionClosed as closed:
                assert closed.rcvd is not None and closed.rcvd.code == 4429
    finally:
        await client.aclose()
        await server.stop()


async def test_a_websocket_message_over_one_mebibyte_closes_the_socket(api, user):
    auth = {"Authorization": f"Bearer {user.token}"}
    try:
        async with graphql_ws(api.ws_url, auth) as ws:
            await ws.subscribe(WATCH, {"g": "x" * 1_100_000})
            message = await ws.receive()
            raise AssertionError(f"expected a close, got {str(message)[:200]}")
    except websockets.ConnectionClosed as closed:
        assert closed.rcvd is not None and closed.rcvd.code == 1009  # message too big


async def test_websockets_are_served_on_graphql_only(api, user):
    """/graphql's websockets go straight to the GraphQL view (app/main.py);
    any other path is still refused by the router."""
    auth = {"Authorization": f"Bearer {user.token}"}
    for path in ("/graphql/", "/health", "/api/files", "/nowhere"):
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with graphql_ws(api.ws_url.replace("/graphql", path), auth):
                pass
        assert refused.value.response.status_code == 403, path
    async with graphql_ws(api.ws_url, auth) as ws:
        messages = await ws.request("{ me { id } }")
    assert messages[0]["payload"] == {"data": {"me": {"id": str(user.id)}}}
