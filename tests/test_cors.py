"""Browser access (issue 11): one setting, ALLOWED_ORIGINS, grants CORS on every
route and passes the websocket Origin check; by default it is FRONTEND_BASE_URL's
origin (here https://app.example.test), plus the local dev addresses in dev mode.
Pages on other origins get no grant and no websocket."""

from __future__ import annotations

import httpx
import pytest
import websockets

from app.settings import Settings
from tests.conftest import TEST_ENV
from tests.harness import ApiServer, graphql_ws

FRONTEND = "https://app.example.test"
STRANGER = "https://evil.example.test"
PREFLIGHT_HEADERS = "authorization, content-type, x-api-key, accept"


def preflight(origin: str, method: str = "POST", headers: str = PREFLIGHT_HEADERS) -> dict:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": headers,
    }


@pytest.mark.parametrize("path", ["/graphql", "/api/files"])
async def test_preflight_from_the_frontend_is_granted(api, path):
    async with httpx.AsyncClient(base_url=api.base_url) as http:
        response = await http.options(path, headers=preflight(FRONTEND))
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == FRONTEND
    assert response.headers["access-control-allow-credentials"] == "true"
    allowed = {
        h.strip().lower() for h in response.headers["access-control-allow-headers"].split(",")
    }
    assert {"authorization", "content-type", "x-api-key", "accept"} <= allowed
    assert "POST" in response.headers["access-control-allow-methods"]
    # Browsers cache the answer instead of asking before every request.
    assert int(response.headers["access-control-max-age"]) >= 600


@pytest.mark.parametrize("path", ["/graphql", "/api/files"])
async def test_preflight_from_another_origin_gets_no_grant(api, path):
    async with httpx.AsyncClient(base_url=api.base_url) as http:
        response = await http.options(path, headers=preflight(STRANGER))
        lookalike = await http.options(path, headers=preflight(FRONTEND + ".evil.test"))
    for answer in (response, lookalike):
        assert answer.status_code >= 400
        assert "access-control-allow-origin" not in answer.headers


async def test_requests_carry_the_grant_and_expose_the_request_id(api, gql, user):
    response = await gql.post("{ me { id } }", token=user.token, headers={"Origin": FRONTEND})
    assert response.json()["data"]["me"]["id"] == str(user.id)
    assert response.headers["access-control-allow-origin"] == FRONTEND
    assert response.headers["access-control-allow-credentials"] == "true"
    exposed = response.headers["access-control-expose-headers"].lower()
    assert "x-request-id" in exposed and response.headers["x-request-id"]
    assert "origin" in response.headers["vary"].lower()

    foreign = await gql.post("{ me { id } }", token=user.token, headers={"Origin": STRANGER})
    # Without Access-Control-Allow-Origin the browser hides the answer from the page.
    assert "access-control-allow-origin" not in foreign.headers

    # Errors answered before GraphQL runs (a body too large) carry the grant too,
    # so the page can read why.
    big = await gql.http.post(
        "/graphql",
        content=b"x" * 1_100_000,
        headers={"Origin": FRONTEND, "Content-Type": "application/json"},
    )
    assert big.status_code == 413
    assert big.headers["access-control-allow-origin"] == FRONTEND


async def test_upload_answers_carry_the_grant(api, user):
    async with httpx.AsyncClient(base_url=api.base_url) as http:
        response = await http.post(
            "/api/files",
            headers={"Origin": FRONTEND, "Authorization": f"Bearer {user.token}"},
            files={"file": ("a.txt", b"hello", "text/plain")},
        )
    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == FRONTEND


async def test_websocket_origin_check_follows_the_same_setting(api, user):
    auth = {"Authorization": f"Bearer {user.token}"}
    async with graphql_ws(api.ws_url, auth, headers={"Origin": FRONTEND}) as ws:
        op = await ws.subscribe("{ me { id } }")
        assert [m["type"] async for m in ws.results(op)] == ["next", "complete"]
    # Non-browser clients send no Origin and are not subject to the check.
    async with graphql_ws(api.ws_url, auth):
        pass
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with graphql_ws(api.ws_url, auth, headers={"Origin": STRANGER}):
            pass
    assert refused.value.response.status_code == 403


async def test_allowed_origins_replaces_the_default(database, user):
    local = "http://127.0.0.1:5173"
    server = ApiServer(TEST_ENV, {"ALLOWED_ORIGINS": f"{local}, https://other.example.test"})
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            granted = await http.options("/graphql", headers=preflight(local))
            default = await http.options("/graphql", headers=preflight(FRONTEND))
        assert granted.headers["access-control-allow-origin"] == local
        assert "access-control-allow-origin" not in default.headers
        auth = {"Authorization": f"Bearer {user.token}"}
        async with graphql_ws(server.ws_url, auth, headers={"Origin": local}):
            pass
        with pytest.raises(websockets.InvalidStatus):
            async with graphql_ws(server.ws_url, auth, headers={"Origin": FRONTEND}):
                pass
    finally:
        await server.stop()


def test_the_default_is_the_frontend_plus_local_addresses_in_dev_only():
    production = Settings(
        ENVIRONMENT="production", FRONTEND_BASE_URL="https://App.Example.com/app/"
    )
    assert production.allowed_origins == ["https://app.example.com"]
    dev = Settings(ENVIRONMENT="dev", FRONTEND_BASE_URL="http://localhost:3000")
    assert dev.allowed_origins[0] == "http://localhost:3000"
    assert {"http://127.0.0.1:8000", "http://localhost:8000"} <= set(dev.allowed_origins)
    listed = Settings(ENVIRONMENT="dev", ALLOWED_ORIGINS='["https://a.example.com:443"]')
    assert listed.allowed_origins == ["https://a.example.com"]
    with pytest.raises(ValueError, match="not an http"):
        Settings(ALLOWED_ORIGINS="app.example.com")
