"""Signing in (SEMANTICS.md §1): JWTs, API keys, websockets."""

from __future__ import annotations

import time
import uuid

import jwt
import pytest
import websockets

from tests.harness import graphql_ws

ME = "{ me { id email } }"


async def test_valid_token_signs_in(gql, new_user):
    person = new_user()
    data = await gql.ok(ME, token=person.token)
    assert data["me"] == {"id": str(person.id), "email": person.email}


async def test_no_credentials_is_unauthenticated(gql):
    assert await gql.error_code(ME) == "UNAUTHENTICATED"


def _token(settings, **overrides):
    claims = {
        "sub": str(uuid.uuid4()),
        "email": "x@example.test",
        "aud": settings.JWT_AUDIENCE,
        "exp": int(time.time()) + 600,
    }
    claims.update(overrides)
    secret = claims.pop("_secret", settings.JWT_SECRET)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, secret, algorithm="HS256")


@pytest.mark.parametrize(
    "overrides",
    [
        {"exp": int(time.time()) - 10},
        {"_secret": "not-the-secret-0123456789abcdef0123"},
        {"aud": "someone-else"},
        {"sub": "not-a-uuid"},
        {"sub": None},
        {"exp": None},
    ],
    ids=["expired", "bad-signature", "wrong-audience", "bad-sub", "no-sub", "no-exp"],
)
async def test_bad_tokens_are_unauthenticated(gql, settings, overrides):
    token = _token(settings, **overrides)
    assert await gql.error_code(ME, token=token) == "UNAUTHENTICATED"


async def test_garbage_authorization_headers_are_unauthenticated(gql):
    for header in ("Bearer not.a.jwt", "Basic dXNlcjpwYXNz", "Bearer"):
        body = await gql.execute(ME, headers={"Authorization": header})
        assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED", header


async def test_bad_token_creates_no_user(gql, settings):
    from app.models import User

    user_id = uuid.uuid4()
    token = _token(settings, sub=str(user_id), _secret="wrong-secret-0123456789abcdef012345")
    assert await gql.error_code(ME, token=token) == "UNAUTHENTICATED"
    assert await User.filter(id=user_id).count() == 0


async def test_introspection_needs_no_sign_in(gql):
    data = await gql.ok("{ __schema { queryType { name } } }")
    assert data["__schema"]["queryType"]["name"] == "Query"


async def _create_key(gql, user, permissions):
    data = await gql.ok(
        """mutation($input: ApiKeyInput!) {
             createApiKey(input: $input) { plainTextKey apiKey { id } } }""",
        {"input": {"name": "k", "permissions": permissions}},
        token=user.token,
    )
    return data["createApiKey"]["plainTextKey"], data["createApiKey"]["apiKey"]["id"]


async def test_api_key_cannot_manage_account_or_keys(gql, user):
    key, _ = await _create_key(gql, user, ["READ_GRAPH", "EXECUTE_GRAPH"])
    for query in (ME, "{ apiKeys { id } }", "{ onboarding { agentRuns } }"):
        assert await gql.error_code(query, api_key=key) == "FORBIDDEN", query
    code = await gql.error_code(
        'mutation { createApiKey(input: {name: "x", permissions: [READ_GRAPH]}) { plainTextKey } }',
        api_key=key,
    )
    assert code == "FORBIDDEN"


async def test_unknown_and_malformed_api_keys_are_unauthenticated(gql):
    for key in ("agpt_" + "x" * 43, "agpt_short", "nonsense"):
        assert await gql.error_code(ME, api_key=key) == "UNAUTHENTICATED", key


async def test_websocket_signs_in_with_connection_init_token(api, user):
    async with graphql_ws(api.ws_url, {"Authorization": f"Bearer {user.token}"}) as ws:
        messages = await ws.request(ME)
    assert messages[0]["type"] == "next"
    assert messages[0]["payload"]["data"]["me"]["id"] == str(user.id)
    assert messages[-1]["type"] == "complete"


async def test_websocket_signs_in_with_upgrade_headers(api, user):
    headers = {"Authorization": f"Bearer {user.token}"}
    async with graphql_ws(api.ws_url, headers=headers) as ws:
        messages = await ws.request(ME)
    assert messages[0]["payload"]["data"]["me"]["id"] == str(user.id)


async def test_websocket_with_api_key_obeys_permissions(api, gql, user):
    key, _ = await _create_key(gql, user, ["READ_GRAPH"])
    async with graphql_ws(api.ws_url, {"X-API-Key": key}) as ws:
        messages = await ws.request(ME)
    payload = messages[0]["payload"]
    assert payload["errors"][0]["extensions"]["code"] == "FORBIDDEN"


async def test_websocket_without_credentials_is_closed(api):
    """Issue 13: anonymous sockets were acknowledged and lived on; no operation
    needs anonymity, so connection_init must sign in."""
    async with graphql_ws(api.ws_url, {}, expect_ack=False) as ws:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.receive()
    assert closed.value.rcvd.code == 4403


async def test_websocket_with_bad_token_is_rejected(api, settings):
    token = _token(settings, exp=int(time.time()) - 5)
    async with graphql_ws(api.ws_url, {"Authorization": f"Bearer {token}"}, expect_ack=False) as ws:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.receive()
    assert closed.value.rcvd.code == 4403
