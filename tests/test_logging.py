"""Structured logs: JSON lines that carry the request, user and execution ids."""

from __future__ import annotations

import asyncio
import json

import httpx

from tests.conftest import TEST_ENV
from tests.execution_helpers import execute, wait_for_end
from tests.graph_builders import create_graph
from tests.harness import ApiServer, graphql_ws


def _json_lines(text: str) -> list[dict]:
    lines = []
    for line in text.splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


async def test_api_log_lines_are_json_with_request_and_user_ids(database, new_user):
    server = ApiServer(TEST_ENV, {"LOG_LEVEL": "INFO", "LOG_FORMAT": "json"})
    await server.start()
    person = new_user()
    try:
        async with httpx.AsyncClient(base_url=server.base_url) as client:
            response = await client.post(
                "/graphql",
                json={"query": "{ me { id } }"},
                headers={"Authorization": f"Bearer {person.token}", "X-Request-ID": "req-42.a"},
            )
            assert response.headers["x-request-id"] == "req-42.a"
            odd = await client.get("/health", headers={"X-Request-ID": "not ok!" * 20})
            generated = odd.headers["x-request-id"]
            assert len(generated) == 32 and generated.isalnum()
        await asyncio.sleep(0.2)
        lines = _json_lines(server.log_path.read_text())
    finally:
        await server.stop()
    mine = [line for line in lines if line.get("request_id") == "req-42.a"]
    assert mine, lines[-5:]
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    assert any(line.get("user_id") == str(person.id) for line in mine)


async def test_websocket_log_lines_carry_its_request_id(database, new_user):
    """Websockets to /graphql skip the HTTP middleware (app/main.py); their
    log lines still carry the socket's request id and its user."""
    server = ApiServer(TEST_ENV, {"LOG_LEVEL": "INFO", "LOG_FORMAT": "json"})
    await server.start()
    person = new_user()
    try:
        auth = {"Authorization": f"Bearer {person.token}"}
        async with graphql_ws(server.ws_url, auth, headers={"X-Request-ID": "ws-7"}) as ws:
            messages = await ws.request("{ me { id } }")
        assert messages[0]["payload"] == {"data": {"me": {"id": str(person.id)}}}
        await asyncio.sleep(0.2)
        lines = _json_lines(server.log_path.read_text())
    finally:
        await server.stop()
    mine = [line for line in lines if line.get("request_id") == "ws-7"]
    assert mine, lines[-5:]


async def test_worker_log_lines_carry_the_execution_id(gql, user, worker):
    graph = await create_graph(gql, user)
    run = await execute(gql, user, graph["id"], {"text": "hi"})
    await wait_for_end(gql, user, run["id"])
    await asyncio.sleep(0.2)
    lines = _json_lines(worker.log())
    ours = [line for line in lines if line.get("execution_id") == run["id"]]
    assert ours, lines[-5:]
    assert all(line["user_id"] == str(user.id) for line in ours)
