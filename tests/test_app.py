"""The app's edges: health, metrics, offline GraphiQL, start-up refusals."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys

import httpx
from graphql import get_introspection_query

from tests.conftest import TEST_ENV
from tests.harness import ROOT, ApiServer, free_port


async def test_health_reports_database_and_redis(api):
    async with httpx.AsyncClient() as client:
        response = await client.get(api.base_url + "/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "redis": "ok"}


async def test_health_is_503_when_redis_is_down(database):
    server = ApiServer(TEST_ENV, {"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
    try:
        await server.start_without_waiting_for_health()
        async with httpx.AsyncClient() as client:
            response = await client.get(server.base_url + "/health")
        assert response.status_code == 503
        body = response.json()
        assert body["status"] == "unavailable"
        assert body["database"] == "ok" and body["redis"].startswith("error")
    finally:
        await server.stop()


async def test_metrics_expose_the_promised_names(api, gql, user):
    await gql.ok("{ me { id } }", token=user.token)
    await gql.execute("{ me { nope } }", token=user.token)
    async with httpx.AsyncClient() as client:
        text = (await client.get(api.base_url + "/metrics")).text
    for name in (
        "agentgraph_graphql_requests_total",
        "agentgraph_resolver_errors_total",
        "agentgraph_http_request_seconds",
        "agentgraph_queue_depth",
        "agentgraph_executions",
        "agentgraph_node_runs",
    ):
        assert name in text, name
    assert re.search(r'agentgraph_resolver_errors_total\{code="BAD_USER_INPUT"\} [1-9]', text)


async def test_graphiql_page_and_every_asset_it_loads_are_served_locally(api):
    async with httpx.AsyncClient(base_url=api.base_url) as client:
        page = await client.get("/graphql", headers={"Accept": "text/html"})
        assert page.status_code == 200
        assert "text/html" in page.headers["content-type"]
        sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert sources, "the page loads no assets?"
        for source in sources:
            if source == "data:,":  # the empty favicon, so browsers ask for none
                continue
            assert source.startswith("/static/graphiql/"), f"external asset: {source}"
            asset = await client.get(source)
            assert asset.status_code == 200, source
            assert len(asset.content) > 500, source
        assert "https://" not in page.text and "http://" not in page.text


async def test_graphiql_introspection_query_answers_without_errors(api, gql, user):
    # GraphiQL's first request; JSON defaults such as `inputs: JSON! = {}`
    # must print as literals.
    result = await gql.execute(get_introspection_query(), token=user.token)
    assert "errors" not in result, result.get("errors")
    mutation = next(t for t in result["data"]["__schema"]["types"] if t["name"] == "Mutation")
    execute = next(f for f in mutation["fields"] if f["name"] == "executeGraph")
    defaults = {a["name"]: a["defaultValue"] for a in execute["args"]}
    assert defaults["inputs"].replace(" ", "") == "{}"


async def test_explorer_off_hides_graphiql_and_introspection(database, new_user):
    server = ApiServer(TEST_ENV, {"GRAPHQL_EXPLORER": "false"})
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.base_url) as client:
            page = await client.get("/graphql", headers={"Accept": "text/html"})
            assert "GraphiQL" not in page.text
            body = (
                await client.post("/graphql", json={"query": "{ __schema { queryType { name } } }"})
            ).json()
            assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
            person = new_user()
            me = (
                await client.post(
                    "/graphql",
                    json={"query": "{ me { id } }"},
                    headers={"Authorization": f"Bearer {person.token}"},
                )
            ).json()
            assert me["data"]["me"]["id"] == str(person.id)
    finally:
        await server.stop()


def _serve_with(env_overrides: dict[str, str | None]) -> subprocess.CompletedProcess:
    import os

    env = {**os.environ, **TEST_ENV}
    for name, value in env_overrides.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "serve", "--port", str(free_port())],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_production_refuses_the_dev_jwt_secret():
    result = _serve_with({"JWT_SECRET": None})
    assert result.returncode != 0
    assert "JWT_SECRET" in result.stderr


def test_production_refuses_the_dev_api_key_pepper():
    result = _serve_with({"API_KEY_PEPPER": None})
    assert result.returncode != 0
    assert "API_KEY_PEPPER" in result.stderr


async def test_queries_work_over_http_get(api, user):
    async with httpx.AsyncClient(base_url=api.base_url) as client:
        response = await client.get(
            "/graphql",
            params={"query": "{ me { id } }"},
            headers={"Authorization": f"Bearer {user.token}"},
        )
        assert response.json() == {"data": {"me": {"id": str(user.id)}}}
        mutation = await client.get(
            "/graphql",
            params={"query": "mutation { resetOnboarding { agentRuns } }"},
            headers={"Authorization": f"Bearer {user.token}"},
        )
        assert mutation.status_code in (400, 405)


async def test_legacy_graphql_ws_protocol(api, user):
    import json

    import websockets

    async with websockets.connect(api.ws_url, subprotocols=["graphql-ws"]) as ws:
        await ws.send(
            json.dumps(
                {"type": "connection_init", "payload": {"Authorization": f"Bearer {user.token}"}}
            )
        )
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        # The legacy protocol carries subscriptions only; a query is a clear client error.
        await ws.send(
            json.dumps({"id": "1", "type": "start", "payload": {"query": "{ me { id } }"}})
        )
        message = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert message["type"] == "error"
    assert message["payload"]["extensions"]["code"] == "BAD_USER_INPUT"
    assert "query operations are not allowed" in message["payload"]["message"]


async def test_legacy_graphql_ws_rejects_bad_credentials(api):
    import json

    import websockets

    async with websockets.connect(api.ws_url, subprotocols=["graphql-ws"]) as ws:
        await ws.send(
            json.dumps({"type": "connection_init", "payload": {"Authorization": "Bearer nope"}})
        )
        message = json.loads(await ws.recv())
        assert message["type"] == "connection_error"
        assert message["payload"] == {"code": "UNAUTHENTICATED"}
