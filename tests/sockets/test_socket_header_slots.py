"""Slots taken at the handshake, attacked: every way a socket signed
in by its upgrade headers can leave gives its slot back, and no way lets a
user hold more than MAX_WEBSOCKETS_PER_USER (2 on the `capped` server)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time

import pytest
import websockets

from tests.graph_builders import create_graph
from tests.harness import MULTIPART_ACCEPT, GraphQLClient, closed_with, graphql_ws, issue_jwt
from tests.sockets.helpers import (
    WATCH,
    assert_clean_log,
    auth,
)

PROTOCOLS = ("graphql-transport-ws", "graphql-ws")


async def _raw(server, protocol: str, headers: dict | None = None):
    return await websockets.connect(
        server.ws_url, subprotocols=[protocol], additional_headers=headers or {}
    )


async def _init(connection, payload: dict | None = None) -> dict | int | None:
    """The answer to connection_init: the first message, or the close code."""
    try:
        await connection.send(json.dumps({"type": "connection_init", "payload": payload or {}}))
        async with asyncio.timeout(10):
            return json.loads(await connection.recv())
    except websockets.ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else None


async def exactly_two(server, headers: dict, timeout: float = 20.0) -> None:
    """Two header-signed sockets of the user fit again (polled: closes are
    noticed a moment later) and a third is refused 4429 at once."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            async with (
                graphql_ws(server.ws_url, {}, headers),
                graphql_ws(server.ws_url, {}, headers),
            ):
                third = await _raw(server, "graphql-transport-ws", headers)
                assert await closed_with(third) == 4429, "a third socket was let in"
                return
        except websockets.ConnectionClosed as closed:
            assert closed.rcvd is not None and closed.rcvd.code == 4429, closed
        assert asyncio.get_running_loop().time() < deadline, "the slots were never given back"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_closing_before_connection_init_gives_the_slot_back(capped, capped_user, protocol):
    headers = auth(capped_user)
    for _ in range(4):
        sockets = [await _raw(capped, protocol, headers) for _ in range(2)]
        for socket in sockets:
            await socket.close()
    await exactly_two(capped, headers)
    assert_clean_log(capped)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_tcp_abort_before_and_after_init_gives_the_slot_back(capped, capped_user, protocol):
    headers = auth(capped_user)
    for init in (False, True, False, True):
        socket = await _raw(capped, protocol, headers)
        if init:
            answer = await _init(socket)
            assert isinstance(answer, dict) and answer["type"] == "connection_ack", answer
        socket.transport.abort()
    await exactly_two(capped, headers)


async def test_tcp_abort_during_the_handshake_gives_the_slot_back(capped, capped_user):
    headers = auth(capped_user)
    host, port = capped.base_url.removeprefix("http://").split(":")
    request = (
        "GET /graphql HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        f"Sec-WebSocket-Protocol: graphql-ws\r\nAuthorization: {headers['Authorization']}\r\n\r\n"
    ).encode()
    for read_first in (False, True, False, True, False, True):
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(request)
        await writer.drain()
        if read_first:
            await reader.readuntil(b"\r\n\r\n")
        writer.transport.abort()
    await exactly_two(capped, headers)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_refused_payload_credentials_after_header_sign_in_give_the_slot_back(
    capped, capped_user, settings, protocol
):
    headers = auth(capped_user)
    bad = {"Authorization": "Bearer not-a-token"}
    expired = {
        "Authorization": "Bearer "
        + issue_jwt(settings, capped_user.id, capped_user.email, expires_in=-10)
    }
    for payload in (bad, expired, {"X-API-Key": "agpt_" + "x" * 43}, bad, expired):
        socket = await _raw(capped, protocol, headers)
        answer = await _init(socket, payload)
        if isinstance(answer, dict):  # legacy: connection_error first
            assert answer["type"] == "connection_error", answer
            answer = await closed_with(socket)
        assert answer == 4403, answer
    await exactly_two(capped, headers)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_header_token_expiring_before_init_gives_the_slot_back(
    capped, capped_user, settings, protocol
):
    headers = auth(capped_user)
    # Opened just before the token's exp, initialised just after (the init
    # timeout is one second).
    short = issue_jwt(settings, capped_user.id, capped_user.email, expires_in=2)
    expires = json.loads(base64.urlsafe_b64decode(short.split(".")[1] + "=="))["exp"]
    await asyncio.sleep(max(0.0, expires - 0.4 - time.time()))  # a clock, not the server
    sockets = [await _raw(capped, protocol, {"Authorization": f"Bearer {short}"}) for _ in range(2)]
    await asyncio.sleep(max(0.0, expires + 0.1 - time.time()))
    for socket in sockets:
        answer = await _init(socket)
        if isinstance(answer, dict):
            assert answer["type"] == "connection_error", answer
            answer = await closed_with(socket)
        assert answer == 4403, answer
    await exactly_two(capped, headers)


async def test_credential_watch_closing_a_header_signed_socket_gives_the_slot_back(
    capped, capped_user, settings
):
    headers = auth(capped_user)
    short = issue_jwt(settings, capped_user.id, capped_user.email, expires_in=3)
    sockets = [
        await _raw(capped, protocol, {"Authorization": f"Bearer {short}"}) for protocol in PROTOCOLS
    ]
    for socket in sockets:
        answer = await _init(socket)
        assert isinstance(answer, dict) and answer["type"] == "connection_ack", answer
    for socket in sockets:
        assert await closed_with(socket, deadline=15) == 4403
    await exactly_two(capped, headers)


async def test_header_a_payload_b_then_a_then_b_moves_one_slot(capped, capped_user, new_user):
    person_a, person_b = capped_user, new_user()
    a, b = auth(person_a), auth(person_b)
    legacy = await _raw(capped, "graphql-ws", a)
    for payload in (b, a, b, a, b):
        answer = await _init(legacy, payload)
        assert isinstance(answer, dict) and answer["type"] == "connection_ack", answer
    # It holds one slot of B, none of A: A has two, B one more.
    async with graphql_ws(capped.ws_url, a), graphql_ws(capped.ws_url, a):
        third = await _raw(capped, "graphql-transport-ws", a)
        assert await closed_with(third) == 4429
    async with graphql_ws(capped.ws_url, b):
        third = await _raw(capped, "graphql-transport-ws", b)
        assert await closed_with(third) == 4429
    await legacy.close()
    await exactly_two(capped, a)
    await exactly_two(capped, b)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_payload_of_a_user_at_cap_after_header_sign_in_gives_both_back(
    capped, capped_user, new_user, protocol
):
    a, b = auth(capped_user), auth(new_user())
    async with graphql_ws(capped.ws_url, b), graphql_ws(capped.ws_url, b):
        socket = await _raw(capped, protocol, a)
        answer = await _init(socket, b)
        if isinstance(answer, dict):
            assert answer["payload"]["code"] == "RATE_LIMITED", answer
            answer = await closed_with(socket)
        assert answer == 4429
    await exactly_two(capped, a)
    await exactly_two(capped, b)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_headers_of_a_user_at_cap_close_the_socket_whatever_its_payload(
    capped, capped_user, new_user, protocol
):
    """A decision (README, "Websocket caps"): a socket counts against the user
    its upgrade headers sign in from the handshake on, so one whose header user
    has no slot left is closed 4429 at once, even if its connection_init would
    sign in B, who has slots left (else sockets holding A's headers would be
    free until the init timeout). B's own sockets are unaffected."""
    a, b = auth(capped_user), auth(new_user())
    async with graphql_ws(capped.ws_url, {}, a), graphql_ws(capped.ws_url, {}, a):
        socket = await _raw(capped, protocol, a)
        answer = await _init(socket, b)
        if isinstance(answer, dict):  # graphql-ws says why first (if read before the close)
            assert protocol == "graphql-ws", answer
            assert answer["type"] == "connection_error", answer
            assert answer["payload"]["code"] == "RATE_LIMITED"
            answer = await closed_with(socket)
        assert answer == 4429, answer
        async with graphql_ws(capped.ws_url, b):
            pass


async def test_over_cap_sockets_aborted_at_once_leave_no_trace(capped, capped_user):
    headers = auth(capped_user)
    async with graphql_ws(capped.ws_url, {}, headers), graphql_ws(capped.ws_url, {}, headers):
        for protocol in PROTOCOLS * 3:
            socket = await _raw(capped, protocol, headers)
            socket.transport.abort()
    await exactly_two(capped, headers)
    assert_clean_log(capped)


async def test_concurrent_handshakes_never_exceed_the_cap(capped, capped_user):
    headers = auth(capped_user)

    async def attempt(protocol: str):
        socket = await _raw(capped, protocol, headers)
        return socket, await _init(socket)

    outcomes = await asyncio.gather(*(attempt(PROTOCOLS[i % 2]) for i in range(12)))
    acked = [
        s
        for s, answer in outcomes
        if isinstance(answer, dict) and answer["type"] == "connection_ack"
    ]
    assert len(acked) == 2, [answer for _, answer in outcomes]
    for socket, _ in outcomes:
        with contextlib.suppress(Exception):
            await socket.close()
    await exactly_two(capped, headers)


async def test_unacceptable_subprotocol_with_header_sign_in_gives_the_slot_back(
    capped, capped_user
):
    headers = auth(capped_user)
    for subprotocols in (["nonsense"], None):
        for _ in range(3):
            try:
                socket = await websockets.connect(
                    capped.ws_url, subprotocols=subprotocols, additional_headers=headers
                )
            except websockets.InvalidHandshake:
                continue
            await closed_with(socket)
    await exactly_two(capped, headers)


def _watch_stream(client: GraphQLClient, graph: dict, headers: dict, accept: str):
    """An HTTP subscription stream (multipart or SSE) of the graph's events."""
    return client.http.stream(
        "POST",
        "/graphql",
        json={"query": WATCH, "variables": {"g": graph["id"]}},
        headers={**headers, "Accept": accept},
    )


@pytest.mark.parametrize("accept", [MULTIPART_ACCEPT, "text/event-stream"])
async def test_an_http_stream_takes_exactly_one_slot(capped, capped_user, accept):
    headers = auth(capped_user)
    client = GraphQLClient(capped.base_url)
    try:
        graph = await create_graph(client, capped_user)
        async with _watch_stream(client, graph, headers, accept) as stream:
            assert stream.status_code == 200, await stream.aread()
            async with graphql_ws(capped.ws_url, {}, headers):
                third = await _raw(capped, "graphql-ws", headers)
                answer = json.loads(await third.recv())
                assert answer["payload"]["code"] == "RATE_LIMITED", answer
                assert await closed_with(third) == 4429
    finally:
        await client.aclose()
    await exactly_two(capped, headers)


async def test_api_key_and_token_headers_share_one_cap(capped, capped_user):
    client = GraphQLClient(capped.base_url)
    try:
        created = await client.ok(
            'mutation { createApiKey(input: {name: "k", permissions: [READ_EXECUTION]}) '
            "{ plainTextKey } }",
            token=capped_user.token,
        )
    finally:
        await client.aclose()
    key = {"X-API-Key": created["createApiKey"]["plainTextKey"]}
    async with graphql_ws(capped.ws_url, {}, key), graphql_ws(capped.ws_url, {}, auth(capped_user)):
        for headers in (key, auth(capped_user)):
            third = await _raw(capped, "graphql-transport-ws", headers)
            assert await closed_with(third) == 4429
    await exactly_two(capped, key)


@pytest.mark.parametrize("accept", [MULTIPART_ACCEPT, "text/event-stream"])
async def test_an_http_stream_dropped_mid_stream_gives_its_slot_back(capped, capped_user, accept):
    headers = auth(capped_user)
    client = GraphQLClient(capped.base_url)
    try:
        graph = await create_graph(client, capped_user)
        for _ in range(3):
            async with _watch_stream(client, graph, headers, accept) as stream:
                assert stream.status_code == 200
            await exactly_two(capped, headers)
    finally:
        await client.aclose()
