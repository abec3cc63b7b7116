"""SIGTERM to an API process: in-flight requests finish, websockets close properly."""

from __future__ import annotations

import asyncio
import signal

import httpx
import websockets

from tests.conftest import TEST_ENV
from tests.graph_builders import block_id, create_graph
from tests.harness import ApiServer, GraphQLClient, graphql_ws

WATCH = "subscription($g: ID!) { graphExecutionEvents(graphId: $g) { __typename } }"
SLOW = "mutation($b: ID!) { executeBlock(blockId: $b, input: {input: 1, seconds: 2}) { outputs } }"


async def test_sigterm_finishes_requests_in_flight_and_closes_websockets(
    database, new_user, worker
):
    server = ApiServer(TEST_ENV, {"LOG_LEVEL": "INFO"})
    await server.start()
    person = new_user()
    auth = {"Authorization": f"Bearer {person.token}"}
    client = GraphQLClient(server.base_url)
    try:
        graph = await create_graph(client, person)
        async with graphql_ws(server.ws_url, auth) as live:
            await live.subscribe(WATCH, {"g": graph["id"]})
            async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
                slow = asyncio.create_task(
                    http.post(
                        "/graphql",
                        json={"query": SLOW, "variables": {"b": block_id("Wait")}},
                        headers=auth,
                    )
                )
                await asyncio.sleep(0.5)  # the request is inside its 2 s wait
                server.process.send_signal(signal.SIGTERM)
                response = await slow
            assert response.status_code == 200
            assert response.json()["data"]["executeBlock"]["outputs"] == {"output": [1]}
            try:
                message = await live.receive(timeout=15)
                raise AssertionError(f"expected the socket to close, got {message}")
            except websockets.ConnectionClosed as closed:
                # 1012 "service restart" (or 1001 "going away"): reconnect elsewhere.
                assert closed.rcvd is not None and closed.rcvd.code in (1001, 1012)
        # uvicorn re-raises the SIGTERM it handled once it has shut down cleanly.
        assert await asyncio.to_thread(server.process.wait, 15) in (0, -signal.SIGTERM)
        assert "Finished server process" in server.log_path.read_text()
    finally:
        await client.aclose()
        await server.stop()
