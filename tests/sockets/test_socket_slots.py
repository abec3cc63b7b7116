"""Connection slots and operation caps under abuse: every refused or dropped
socket gives back what it held, however it leaves."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid

import httpx
import pytest
import websockets

from tests.harness import (
    MULTIPART_ACCEPT,
    GraphQLClient,
    closed_with,
    graphql_ws,
    multipart_parts,
    until_two_fit,
)
from tests.sockets.helpers import (
    KEY,
    ME,
    WATCH,
    _codes,
    _early_in_a_minute,
    _signed_in_socket,
    assert_clean_log,
    auth,
    graph_of,
    handshake_status,
)


async def test_more_sockets_than_the_cap_on_both_protocols_are_refused_and_slots_return(
    capped, capped_user
):
    headers = auth(capped_user)
    async with graphql_ws(capped.ws_url, headers), graphql_ws(capped.ws_url, headers):
        # Signed in by its headers, a third is refused at the handshake, before
        # any connection_init. graphql-transport-ws: 4429.
        async with websockets.connect(
            capped.ws_url, subprotocols=["graphql-transport-ws"], additional_headers=headers
        ) as third:
            assert await closed_with(third) == 4429
        # Legacy graphql-ws: a connection_error with RATE_LIMITED, then 4429.
        async with websockets.connect(
            capped.ws_url, subprotocols=["graphql-ws"], additional_headers=headers
        ) as legacy:
            message = json.loads(await legacy.recv())
            assert message["type"] == "connection_error", message
            assert message["payload"]["code"] == "RATE_LIMITED"
            assert await closed_with(legacy) == 4429
        # Credentials in connection_init count the same.
        async with websockets.connect(
            capped.ws_url, subprotocols=["graphql-transport-ws"]
        ) as fourth:
            await fourth.send(json.dumps({"type": "connection_init", "payload": headers}))
            assert await closed_with(fourth) == 4429
    await until_two_fit(capped, headers)
    assert_clean_log(capped)


async def test_connection_init_twice_takes_one_slot(capped, capped_user):
    headers = auth(capped_user)
    async with websockets.connect(capped.ws_url, subprotocols=["graphql-ws"]) as legacy:
        for _ in range(3):
            await legacy.send(json.dumps({"type": "connection_init", "payload": headers}))
        acks = [json.loads(await legacy.recv()) for _ in range(3)]
        assert [a["type"] for a in acks] == ["connection_ack"] * 3, acks
        # One slot held: exactly one more socket fits.
        async with graphql_ws(capped.ws_url, headers):
            async with websockets.connect(
                capped.ws_url, subprotocols=["graphql-transport-ws"], additional_headers=headers
            ) as third:
                assert await closed_with(third) == 4429  # at the handshake
    await until_two_fit(capped, headers)
    async with websockets.connect(capped.ws_url, subprotocols=["graphql-transport-ws"]) as ws:
        await ws.send(json.dumps({"type": "connection_init", "payload": headers}))
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        await ws.send(json.dumps({"type": "connection_init", "payload": headers}))
        assert await closed_with(ws) == 4429  # "Too many initialisation requests"
    await until_two_fit(capped, headers)


@pytest.mark.parametrize("protocol", ["graphql-transport-ws", "graphql-ws"])
async def test_sockets_closed_mid_subscribe_give_their_slots_back(capped, capped_user, protocol):
    headers = auth(capped_user)
    start = "subscribe" if protocol == "graphql-transport-ws" else "start"
    for round_ in range(12):
        connection = await websockets.connect(capped.ws_url, subprotocols=[protocol])
        await connection.send(json.dumps({"type": "connection_init", "payload": headers}))
        if round_ % 3:
            # Don't wait for the ack: subscribe and leave at once.
            for n in range(3):
                await connection.send(
                    json.dumps(
                        {
                            "id": str(n),
                            "type": start,
                            "payload": {"query": WATCH, "variables": {"g": str(uuid.uuid4())}},
                        }
                    )
                )
        if round_ % 2:
            connection.transport.abort()  # no close frame at all
        else:
            await connection.close()
        # Each socket leaves before the next arrives: the cap is never reached
        # unless slots leak. Wait until this one's slot is back.
        await until_two_fit(capped, headers)
    assert_clean_log(capped)


@pytest.mark.parametrize("protocol", ["graphql-transport-ws", "graphql-ws"])
async def test_sockets_that_never_initialise_are_closed_and_give_back_what_they_held(
    capped, capped_user, protocol
):
    """Sockets without credentials hold no slot while they wait for the init
    timeout; sockets signed in by their headers hold theirs until it (a third
    is refused at once), and give them back when closed."""
    headers = auth(capped_user)
    anonymous = [await websockets.connect(capped.ws_url, subprotocols=[protocol]) for _ in range(4)]
    signed = [
        await websockets.connect(capped.ws_url, subprotocols=[protocol], additional_headers=headers)
        for _ in range(3)
    ]
    try:
        codes = await asyncio.gather(*(closed_with(c) for c in anonymous + signed))
        assert codes[:4] == [4408] * 4
        assert sorted(codes[4:]) == [4408, 4408, 4429], codes
    finally:
        for connection in anonymous + signed:
            await connection.close()
    await until_two_fit(capped, headers)
    assert_clean_log(capped)


async def test_operations_per_socket_are_capped_and_freed_by_complete(capped, capped_user):
    headers = auth(capped_user)
    graph = await graph_of(capped, capped_user)
    async with graphql_ws(capped.ws_url, headers) as ws:
        for n in range(3):
            await ws.subscribe(WATCH, {"g": graph["id"]}, op_id=f"live{n}")
        # A fourth, and a repeat of a live id, while three are live.
        await ws.subscribe(ME, op_id="fourth")
        refused = await ws.receive()
        assert refused["id"] == "fourth" and refused["type"] == "error", refused
        assert _codes(refused["payload"]) == ["RATE_LIMITED"]
        # Completing one frees its place: the next operation runs.
        await ws.send({"id": "live0", "type": "complete"})
        deadline = asyncio.get_running_loop().time() + 10
        while True:
            messages = await ws.request(ME)
            if messages[0]["type"] == "next":
                break
            assert _codes(messages[0]["payload"]) == ["RATE_LIMITED"], messages
            assert asyncio.get_running_loop().time() < deadline, messages
        assert messages[0]["payload"] == {"data": {"me": {"id": str(capped_user.id)}}}
        # The same id as a live operation: 4409 (Subscriber already exists).
        await ws.subscribe(WATCH, {"g": graph["id"]}, op_id="live1")
        assert await closed_with(ws.connection) == 4409
    await until_two_fit(capped, headers)
    assert_clean_log(capped)


async def test_http_streams_refused_over_the_cap_and_slots_return(capped, capped_user):
    headers = auth(capped_user)
    graph = await graph_of(capped, capped_user)
    async with (
        graphql_ws(capped.ws_url, headers),
        graphql_ws(capped.ws_url, headers),
        httpx.AsyncClient(base_url=capped.base_url, timeout=10) as client,
    ):
        response = await client.post(
            "/graphql",
            json={"query": WATCH, "variables": {"g": graph["id"]}},
            headers={**headers, "Accept": "text/event-stream"},
        )
        assert response.status_code == 429
        assert response.json()["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
    # A stream the client drops gives its slot back (the server notices each
    # close a moment later: a stream refused meanwhile is asked again).
    async with httpx.AsyncClient(base_url=capped.base_url, timeout=10) as client:
        for _ in range(4):
            deadline = asyncio.get_running_loop().time() + 20
            while True:
                async with client.stream(
                    "POST",
                    "/graphql",
                    json={"query": WATCH, "variables": {"g": graph["id"]}},
                    headers={**headers, "Accept": MULTIPART_ACCEPT},
                ) as stream:
                    if stream.status_code == 200:
                        async for _part in multipart_parts(stream):
                            break
                        break
                    assert stream.status_code == 429, stream.status_code
                assert asyncio.get_running_loop().time() < deadline, "slots never given back"
                await asyncio.sleep(0.05)
    await until_two_fit(capped, headers)
    assert_clean_log(capped)


async def test_anonymous_sockets_past_the_limit_get_no_socket(strict, new_user):
    person = new_user()
    await _early_in_a_minute()
    # Sockets that sign in with connection_init are given back their count.
    for _ in range(6):
        async with graphql_ws(strict.ws_url, auth(person)) as ws:
            messages = await ws.request(ME)
            assert messages[0]["payload"] == {"data": {"me": {"id": str(person.id)}}}
    # Three anonymous sockets (never signing in, or with a hostile origin, or
    # with bad credentials) use the address's minute.
    opened = []
    for headers in ({}, {"Origin": "https://evil.example"}, {"Authorization": "Bearer nope"}):
        try:
            opened.append(
                await websockets.connect(
                    strict.ws_url,
                    subprotocols=["graphql-transport-ws"],
                    additional_headers=headers,
                )
            )
        except websockets.InvalidStatus as refused:
            assert refused.response.status_code == 403
    try:
        for protocol in ("graphql-transport-ws", "graphql-ws", None):
            kwargs = {"subprotocols": [protocol]} if protocol else {}
            assert await handshake_status(strict.ws_url, **kwargs) == 403, protocol
        async with httpx.AsyncClient(base_url=strict.base_url) as client:
            refused = await client.post("/graphql", json={"query": "{ __typename }"})
        assert refused.status_code == 429
        assert refused.json()["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
        # A socket with credentials in its upgrade headers still gets in.
        async with graphql_ws(strict.ws_url, headers=auth(person)) as ws:
            messages = await ws.request(ME)
        assert messages[0]["payload"] == {"data": {"me": {"id": str(person.id)}}}
    finally:
        for connection in opened:
            await connection.close()
    assert "Traceback" not in strict.log()


async def test_a_burst_of_sockets_over_the_cap_gets_exactly_the_cap(capped, capped_user):
    headers = auth(capped_user)

    async def one() -> tuple[str, websockets.ClientConnection | None]:
        connection = await websockets.connect(
            capped.ws_url, subprotocols=["graphql-transport-ws"], additional_headers=headers
        )
        try:
            await connection.send(json.dumps({"type": "connection_init", "payload": {}}))
            message = json.loads(await asyncio.wait_for(connection.recv(), 10))
            return message["type"], connection
        except websockets.ConnectionClosed as closed:
            return f"closed {closed.rcvd.code if closed.rcvd else None}", None

    results = await asyncio.gather(*(one() for _ in range(25)))
    outcomes = sorted(outcome for outcome, _ in results)
    try:
        assert outcomes.count("connection_ack") == 2, outcomes
        assert outcomes.count("closed 4429") == 23, outcomes
    finally:
        await asyncio.gather(*(c.close() for _, c in results if c is not None))
    await until_two_fit(capped, headers)
    assert_clean_log(capped)


async def test_api_key_sockets_dropped_during_sign_in_give_their_slots_back(capped, capped_user):
    client = GraphQLClient(capped.base_url)
    try:
        made = await client.ok(
            KEY, {"p": ["READ_EXECUTION", "READ_GRAPH"]}, token=capped_user.token
        )
    finally:
        await client.aclose()
    key = {"X-API-Key": made["createApiKey"]["plainTextKey"]}
    for round_ in range(10):
        protocol = ("graphql-transport-ws", "graphql-ws")[round_ % 2]
        connection = await websockets.connect(capped.ws_url, subprotocols=[protocol])
        await connection.send(json.dumps({"type": "connection_init", "payload": key}))
        connection.transport.abort()  # while the server looks the key up
    await until_two_fit(capped, key)
    await until_two_fit(capped, auth(capped_user))
    assert_clean_log(capped)


@pytest.mark.parametrize("protocol", ["graphql-transport-ws", "graphql-ws"])
async def test_sockets_that_leave_while_their_answer_is_sent_log_no_traceback(
    capped, capped_user, protocol
):
    """A client leaving is ordinary: the answer it no longer reads must not
    put a traceback in the server log."""
    headers = auth(capped_user)
    start = "subscribe" if protocol == "graphql-transport-ws" else "start"
    for _ in range(40):
        connection = await _signed_in_socket(capped, protocol, headers)
        for n in range(3):
            # Unknown graphs: each answers NOT_FOUND at once, as the client leaves.
            variables = {"g": str(uuid.uuid4())}
            message = {
                "id": str(n),
                "type": start,
                "payload": {"query": WATCH, "variables": variables},
            }
            await connection.send(json.dumps(message))
        connection.transport.abort()
    await until_two_fit(capped, headers)
    module = "graphql_transport_ws/" if protocol == "graphql-transport-ws" else "graphql_ws/"
    assert_clean_log(capped, disconnects=module)


async def test_many_users_at_once_each_get_their_own_cap(capped, new_user):
    people = [new_user() for _ in range(8)]

    async def sockets_of(person) -> list[str]:
        headers = auth(person)
        outcomes = []
        async with contextlib.AsyncExitStack() as stack:
            for _ in range(3):
                connection = await stack.enter_async_context(
                    websockets.connect(capped.ws_url, subprotocols=["graphql-transport-ws"])
                )
                await connection.send(json.dumps({"type": "connection_init", "payload": headers}))
                try:
                    outcomes.append(json.loads(await connection.recv())["type"])
                except websockets.ConnectionClosed as closed:
                    outcomes.append(f"closed {closed.rcvd.code if closed.rcvd else None}")
        return outcomes

    results = await asyncio.gather(*(sockets_of(p) for p in people))
    assert results == [["connection_ack", "connection_ack", "closed 4429"]] * len(people)
    for person in people:
        await until_two_fit(capped, auth(person))
    assert_clean_log(capped)
