"""Hostile handshakes on /graphql's websockets (which skip the HTTP middleware,
app/main.py): path tricks, origins, request ids, subprotocols, Host headers."""

from __future__ import annotations

import asyncio
import json

import pytest
import websockets

from tests.conftest import TEST_ENV
from tests.harness import (
    ApiServer,
    closed_with,
    graphql_ws,
    until_two_fit,
)
from tests.sockets.helpers import (
    FRONTEND,
    ME,
    assert_clean_log,
    auth,
    handshake_status,
)


@pytest.mark.parametrize(
    "path",
    [
        "/graphql/",
        "//graphql",
        "/GRAPHQL",
        "/Graphql",
        "/graphql%2F",
        "/graphql%00",
        "/graphql/x",
        "/graphqlx",
        "/graphql;x",
        "/static/../graphql/",
        "/graphql%20",
        "/graphql%3F",
        "/graphql%23",
        "/./graphql",
        "/graphql/..",
        "/%2Fgraphql",
    ],
)
async def test_websocket_path_tricks_are_refused(capped, capped_user, path):
    url = f"ws://127.0.0.1:{capped.port}{path}"
    status = await handshake_status(
        url, subprotocols=["graphql-transport-ws"], additional_headers=auth(capped_user)
    )
    assert status == 403, (path, status)
    # The server still answers sockets on /graphql.
    async with graphql_ws(capped.ws_url, auth(capped_user)) as ws:
        messages = await ws.request(ME)
    assert messages[0]["payload"] == {"data": {"me": {"id": str(capped_user.id)}}}
    assert_clean_log(capped)


@pytest.mark.parametrize("path", ["/graphql?x=1", "/%67raphql", "/graphql?"])
async def test_websocket_path_spellings_of_graphql_sign_in_like_graphql(capped, capped_user, path):
    """Spellings that are /graphql after decoding behave exactly like /graphql:
    no credentials, no socket; credentials, a working socket."""
    url = f"ws://127.0.0.1:{capped.port}{path}"
    async with websockets.connect(url, subprotocols=["graphql-transport-ws"]) as connection:
        await connection.send(json.dumps({"type": "connection_init", "payload": {}}))
        assert await closed_with(connection) == 4403
    async with graphql_ws(url, auth(capped_user)) as ws:
        messages = await ws.request(ME)
    assert messages[0]["payload"] == {"data": {"me": {"id": str(capped_user.id)}}}
    assert_clean_log(capped)


# --- origins ---------------------------------------------------------------


@pytest.mark.parametrize(
    "origin",
    [
        "https://evil.example",
        "null",
        "https://app.example.test.evil.example",
        "https://evil.example/https://app.example.test",
        "http://app.example.test",
        "https://app.example.test:8443",
        "https://app.example.test@evil.example",
        "wss://app.example.test",
        "",
        " ",
        "https://[",
        "x" * 6000,
        "file://",
    ],
)
async def test_hostile_origins_get_no_socket_even_with_a_token(capped, capped_user, origin):
    status = await handshake_status(
        capped.ws_url,
        subprotocols=["graphql-transport-ws"],
        additional_headers={**auth(capped_user), "Origin": origin},
    )
    assert status == 403, (origin, status)
    # No slot was taken by the refused handshakes.
    await until_two_fit(capped, auth(capped_user))


@pytest.mark.parametrize("origin", [FRONTEND, "https://APP.example.test", FRONTEND + ":443"])
async def test_the_frontend_origin_in_any_spelling_gets_a_socket(capped, capped_user, origin):
    headers = {"Origin": origin}
    async with graphql_ws(capped.ws_url, auth(capped_user), headers=headers) as ws:
        messages = await ws.request(ME)
    assert messages[0]["payload"] == {"data": {"me": {"id": str(capped_user.id)}}}


# --- request ids -----------------------------------------------------------


@pytest.mark.parametrize(
    "request_id",
    ["x" * 7000, "a b c", "id\ttab", "é" * 10, "../../etc/passwd", "{}", "%00", ";"],
)
async def test_garbage_request_ids_on_a_socket_change_nothing(capped, capped_user, request_id):
    headers = {"X-Request-ID": request_id}
    async with graphql_ws(capped.ws_url, auth(capped_user), headers=headers) as ws:
        messages = await ws.request(ME)
    assert messages[0]["payload"] == {"data": {"me": {"id": str(capped_user.id)}}}
    assert_clean_log(capped)


async def test_many_request_id_headers_and_huge_one(capped, capped_user):
    # Several X-Request-ID lines, one of them large (still under uvicorn's header limit).
    headers = [("X-Request-ID", "a" * 7000), ("X-Request-ID", "ok-1"), ("X-Request-Id", "~!@")]
    async with websockets.connect(
        capped.ws_url,
        subprotocols=["graphql-transport-ws"],
        additional_headers=headers,
    ) as connection:
        await connection.send(json.dumps({"type": "connection_init", "payload": auth(capped_user)}))
        assert json.loads(await connection.recv())["type"] == "connection_ack"
    assert_clean_log(capped)


async def test_websocket_log_lines_never_carry_an_insane_request_id(database, new_user):
    server = ApiServer(TEST_ENV, {"LOG_LEVEL": "INFO", "LOG_FORMAT": "json"})
    await server.start()
    person = new_user()
    garbage = "not sane!" * 50
    try:
        async with graphql_ws(server.ws_url, auth(person), headers={"X-Request-ID": garbage}) as ws:
            messages = await ws.request(ME)
        assert messages[0]["payload"] == {"data": {"me": {"id": str(person.id)}}}
        deadline = asyncio.get_running_loop().time() + 10
        while "connection open" not in server.log():
            assert asyncio.get_running_loop().time() < deadline, server.log()[-2000:]
            await asyncio.sleep(0.05)
        # A refused socket's log line carries its (sane) request id too.
        status = await handshake_status(
            server.ws_url,
            subprotocols=["graphql-transport-ws"],
            additional_headers={"Origin": "https://evil.example", "X-Request-ID": "ws-evil-1"},
        )
        assert status == 403
        while '"ws-evil-1"' not in server.log():
            assert asyncio.get_running_loop().time() < deadline, server.log()[-2000:]
            await asyncio.sleep(0.05)
    finally:
        await server.stop()
    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    assert lines
    evil = [line for line in lines if line.get("request_id") == "ws-evil-1"]
    assert any("Rejected WebSocket" in line["message"] for line in evil), evil
    assert all(line.get("request_id") != garbage for line in lines)
    assert all(len(line.get("request_id") or "") <= 64 for line in lines)
    assert not any("Traceback" in json.dumps(line) for line in lines)


# --- subprotocols ----------------------------------------------------------


@pytest.mark.parametrize(
    "subprotocols",
    [None, ["garbage"], ["graphql"], ["GRAPHQL-WS"], "multipart/mixed", "text/event-stream, x"],
)
async def test_sockets_without_a_known_subprotocol_are_closed_and_hold_nothing(
    capped, capped_user, subprotocols
):
    headers = auth(capped_user)
    kwargs = {}
    if isinstance(subprotocols, str):  # not a token: sent as a raw header
        headers["Sec-WebSocket-Protocol"] = subprotocols
    elif subprotocols:
        kwargs["subprotocols"] = subprotocols
    try:
        async with websockets.connect(
            capped.ws_url, additional_headers=headers, **kwargs
        ) as connection:
            code = await closed_with(connection)
    except websockets.InvalidHandshake as refused:
        code = getattr(getattr(refused, "response", None), "status_code", str(refused))
    # 400: uvicorn refuses a malformed Sec-WebSocket-Protocol header itself.
    assert code in (4406, 403, 400), code
    await until_two_fit(capped, auth(capped_user))
    assert_clean_log(capped)


async def test_a_known_subprotocol_after_garbage_is_chosen(capped, capped_user):
    async with websockets.connect(
        capped.ws_url, subprotocols=["garbage", "graphql-transport-ws"]
    ) as connection:
        assert connection.subprotocol == "graphql-transport-ws"
        await connection.send(json.dumps({"type": "connection_init", "payload": auth(capped_user)}))
        assert json.loads(await connection.recv())["type"] == "connection_ack"


@pytest.mark.parametrize(
    "host",
    [None, "", "evil.example", "127.0.0.1:1", "[::1", "app.example.test", "x" * 2000],
)
async def test_hostile_origin_with_odd_host_headers_gets_no_socket(capped, capped_user, host):
    """A raw handshake: the Origin check compares Origin with Host."""
    lines = [
        "GET /graphql HTTP/1.1",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
        "Sec-WebSocket-Protocol: graphql-transport-ws",
        "Origin: https://evil.example.org",
        f"Authorization: Bearer {capped_user.token}",
    ]
    if host is not None:
        lines.append(f"Host: {host}")
    reader, writer = await asyncio.open_connection("127.0.0.1", capped.port)
    try:
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await writer.drain()
        async with asyncio.timeout(10):
            status_line = await reader.readline()
    finally:
        writer.close()
    status = status_line.split()[1].decode() if status_line else "no answer"
    assert status in ("403", "400"), (host, status_line)
    assert_clean_log(capped)
