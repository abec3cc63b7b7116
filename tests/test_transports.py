"""What every transport sends is what browser clients read: JSON text frames on
both websocket protocols, JSON bodies over HTTP (issue 11)."""

from __future__ import annotations

import json

import pytest
import websockets

from tests.execution_helpers import execute, wait_for_end
from tests.graph_builders import create_graph

EVENTS = """subscription($id: ID!) { executionEvents(executionId: $id) {
  ... on ExecutionStatusEvent { seq execution { status } } } }"""


async def _frames(connection, until: str) -> list[str | bytes]:
    frames = []
    while True:
        frame = await connection.recv()
        frames.append(frame)
        if json.loads(frame)["type"] == until:
            return frames


async def test_graphql_transport_ws_sends_text_frames_only(api, user):
    async with websockets.connect(api.ws_url, subprotocols=["graphql-transport-ws"]) as ws:
        await ws.send(
            json.dumps(
                {"type": "connection_init", "payload": {"Authorization": f"Bearer {user.token}"}}
            )
        )
        frames = await _frames(ws, "connection_ack")
        await ws.send(
            json.dumps({"id": "1", "type": "subscribe", "payload": {"query": "{ me { id } }"}})
        )
        frames += await _frames(ws, "complete")
        await ws.send(json.dumps({"type": "ping"}))
        frames += await _frames(ws, "pong")
    assert [type(f) for f in frames] == [str] * len(frames)
    assert [json.loads(f)["type"] for f in frames] == ["connection_ack", "next", "complete", "pong"]
    assert json.loads(frames[1])["payload"]["data"]["me"]["id"] == str(user.id)


async def test_legacy_graphql_ws_sends_text_frames_only(api, gql, user, worker):
    graph = await create_graph(gql, user)
    started = await execute(gql, user, graph["id"], {"text": "legacy"})
    await wait_for_end(gql, user, started["id"])
    async with websockets.connect(api.ws_url, subprotocols=["graphql-ws"]) as ws:
        await ws.send(
            json.dumps(
                {"type": "connection_init", "payload": {"Authorization": f"Bearer {user.token}"}}
            )
        )
        frames = await _frames(ws, "connection_ack")
        await ws.send(
            json.dumps(
                {
                    "id": "1",
                    "type": "start",
                    "payload": {"query": EVENTS, "variables": {"id": started["id"]}},
                }
            )
        )
        frames += await _frames(ws, "complete")
    assert [type(f) for f in frames] == [str] * len(frames)
    data = [json.loads(f) for f in frames if json.loads(f)["type"] == "data"]
    assert data[-1]["payload"]["data"]["executionEvents"]["execution"]["status"] == "COMPLETED"


async def test_http_answers_are_utf8_json_of_the_right_length(api, gql, user):
    name = 'Grüße ✓ 🚀 \u2028 "quoted"'
    response = await gql.post(
        "mutation($g: GraphInput!) { createGraph(graph: $g) { name } }",
        {"g": {"name": name, "nodes": [], "links": []}},
        token=user.token,
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert int(response.headers["content-length"]) == len(response.content)
    assert json.loads(response.content.decode("utf-8"))["data"]["createGraph"]["name"] == name


UNREADABLE = {
    "a batch": {"json": [{"query": "{ __typename }"}, {"query": "{ __typename }"}]},
    "not JSON": {"content": b"{", "headers": {"Content-Type": "application/json"}},
    "plain text": {"content": b"{ __typename }", "headers": {"Content-Type": "text/plain"}},
    "no query": {"json": {"variables": {}}},
    "a query that is not text": {"json": {"query": {"a": 1}}},
}


@pytest.mark.parametrize("request_kwargs", list(UNREADABLE.values()), ids=list(UNREADABLE))
async def test_requests_that_cannot_be_read_are_answered_in_json_with_a_code(
    api, gql, user, request_kwargs
):
    """These were answered in plain text ("Batching is not enabled"), which
    Apollo Client and urql fail to parse, with no `extensions.code`."""
    headers = {"Authorization": f"Bearer {user.token}", **request_kwargs.get("headers", {})}
    kwargs = {k: v for k, v in request_kwargs.items() if k != "headers"}
    response = await gql.http.post("/graphql", headers=headers, **kwargs)
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/json")
    [error] = response.json()["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT" and error["message"]


async def test_a_mutation_over_get_is_answered_in_json_with_a_code(api, gql, new_user):
    person = new_user()
    before = await gql.ok("{ me { timezone } }", token=person.token)
    response = await gql.http.get(
        "/graphql",
        params={"query": 'mutation { updateTimezone(timezone: "Europe/Paris") { id } }'},
        headers={"Authorization": f"Bearer {person.token}"},
    )
    assert response.status_code == 400
    assert response.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert await gql.ok("{ me { timezone } }", token=person.token) == before
