"""What the socket attack tests share: constants, log checks, socket helpers."""

from __future__ import annotations

import asyncio
import json
import time

import websockets

from tests.graph_builders import create_graph
from tests.harness import (
    ApiServer,
    GraphQLClient,
)

FRONTEND = "https://app.example.test"
WATCH = "subscription($g: ID!) { graphExecutionEvents(graphId: $g) { __typename } }"
ME = "{ me { id } }"
BAD_SIGNS = ("Traceback", "Exception in ASGI", "ERROR", "Internal server error")


def auth(person) -> dict[str, str]:
    return {"Authorization": f"Bearer {person.token}"}


_LOG_MARKS: dict[int, int] = {}


def assert_clean_log(
    server: ApiServer, signs: tuple[str, ...] = BAD_SIGNS, disconnects: str | None = None
) -> None:
    """Nothing this test did made the server log an error or a traceback.
    Tracebacks of answers to clients that had left are logged whenever their
    task is collected, so maybe during a later test: they count only with
    `disconnects`, the protocol handler's module they must name."""

    def counted(line: str) -> bool:
        if "Task exception was never retrieved" in line and "WebSocketDisconnect" in line:
            return disconnects is not None and disconnects in line
        return True

    text = server.log()[_LOG_MARKS.get(id(server), 0) :]
    text = "\n".join(line for line in text.splitlines() if counted(line))
    for sign in signs:
        assert sign not in text, text[-4000:]


async def handshake_status(url: str, **kw) -> int | str:
    """The HTTP status of a refused handshake, else 'open'."""
    try:
        async with websockets.connect(url, **kw):
            return "open"
    except websockets.InvalidStatus as refused:
        return refused.response.status_code


async def _early_in_a_minute(margin: float = 20.0) -> None:
    """Waits (polling the clock) until at least `margin` seconds of the current
    clock minute remain, so a test's counts fall in one window."""
    left = 60 - time.time() % 60
    if left < margin:
        await asyncio.sleep(left + 0.1)


async def _signed_in_socket(server: ApiServer, protocol: str, headers: dict, timeout: float = 20.0):
    """A socket past connection_ack, once one of the user's two slots is free (an
    aborted socket's slot comes back when the server notices, a moment later)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        connection = await websockets.connect(server.ws_url, subprotocols=[protocol])
        await connection.send(json.dumps({"type": "connection_init", "payload": headers}))
        try:
            answer = json.loads(await connection.recv())
        except websockets.ConnectionClosed as closed:  # graphql-transport-ws: 4429
            assert closed.rcvd is not None and closed.rcvd.code == 4429, closed
        else:
            if answer["type"] == "connection_ack":
                return connection
            # graphql-ws says why first
            assert answer["payload"]["code"] == "RATE_LIMITED", answer
        await connection.close()
        assert asyncio.get_running_loop().time() < deadline, "the slots were never given back"
        await asyncio.sleep(0.05)


SELECTIVE = """subscription($id: ID!, $full: Boolean!) {
  graphExecutionEvents(graphId: $id) {
    seq execution { id status graphId @include(if: $full) } } }"""
KEY = """mutation($p: [ApiKeyPermission!]!) {
  createApiKey(input: {name: "attack", permissions: $p}) { plainTextKey } }"""


def _codes(errors) -> list[str]:
    assert isinstance(errors, list) and errors, errors
    return [(e.get("extensions") or {}).get("code") for e in errors]


async def graph_of(server: ApiServer, person) -> dict:
    """A new graph of `person`, made through `server`'s GraphQL API."""
    client = GraphQLClient(server.base_url)
    try:
        return await create_graph(client, person)
    finally:
        await client.aclose()
