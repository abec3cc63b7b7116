"""API keys: shown once, hashed at rest, scoped, revocable (SEMANTICS.md §1)."""

from __future__ import annotations

import hashlib
import hmac
import uuid

from app.models import ApiKey

FIELDS = "id name description prefix postfix status permissions createdAt lastUsedAt revokedAt"
CREATE = f"""mutation($input: ApiKeyInput!) {{
  createApiKey(input: $input) {{ plainTextKey apiKey {{ {FIELDS} }} }} }}"""
LIST = f"{{ apiKeys {{ {FIELDS} }} }}"
GET = f"query($id: ID!) {{ apiKey(id: $id) {{ {FIELDS} }} }}"
REVOKE = "mutation($id: ID!) { revokeApiKey(id: $id) { id status revokedAt } }"
SUSPEND = "mutation($id: ID!) { suspendApiKey(id: $id) { id status } }"
UPDATE_PERMISSIONS = """mutation($id: ID!, $p: [ApiKeyPermission!]!) {
  updateApiKeyPermissions(id: $id, permissions: $p) { id permissions } }"""
ME = "{ me { id } }"


async def create_key(gql, user, permissions=("READ_GRAPH",), name="ci key", description=None):
    data = await gql.ok(
        CREATE,
        {"input": {"name": name, "description": description, "permissions": list(permissions)}},
        token=user.token,
    )
    return data["createApiKey"]


async def test_create_shows_key_once_and_stores_only_a_keyed_hash(gql, user, settings):
    created = await create_key(gql, user, ["READ_GRAPH", "EXECUTE_GRAPH"], description="for CI")
    plain = created["plainTextKey"]
    key = created["apiKey"]
    assert plain.startswith("agpt_") and len(plain) == 5 + 43
    assert key["prefix"] == plain[:8] and key["postfix"] == plain[-4:]
    assert key["status"] == "ACTIVE"
    assert key["permissions"] == ["READ_GRAPH", "EXECUTE_GRAPH"]
    assert key["description"] == "for CI"
    assert key["lastUsedAt"] is None and key["revokedAt"] is None
    row = await ApiKey.get(id=key["id"])
    expected = hmac.new(settings.API_KEY_PEPPER.encode(), plain.encode(), hashlib.sha256)
    assert row.key_hash == expected.hexdigest()
    assert plain not in str(await ApiKey.filter(id=key["id"]).values())
    listed = (await gql.ok(LIST, token=user.token))["apiKeys"]
    assert [k["id"] for k in listed] == [key["id"]]
    assert "plainTextKey" not in listed[0]


async def test_list_is_newest_first_and_only_mine(gql, user, new_user):
    first = await create_key(gql, user, name="first")
    second = await create_key(gql, user, name="second")
    other = new_user()
    await create_key(gql, other, name="someone else's")
    listed = (await gql.ok(LIST, token=user.token))["apiKeys"]
    assert [k["name"] for k in listed] == ["second", "first"]
    assert {k["id"] for k in listed} == {first["apiKey"]["id"], second["apiKey"]["id"]}


async def test_key_does_what_its_permissions_allow_and_records_last_use(gql, user):
    created = await create_key(gql, user, ["READ_GRAPH"])
    # Keys may never manage the account; the call is refused but the key was valid.
    assert await gql.error_code(ME, api_key=created["plainTextKey"]) == "FORBIDDEN"
    got = (await gql.ok(GET, {"id": created["apiKey"]["id"]}, token=user.token))["apiKey"]
    assert got["lastUsedAt"] is not None


async def test_other_users_key_is_indistinguishable_from_absent(gql, user, new_user):
    other = new_user()
    theirs = (await create_key(gql, other))["apiKey"]["id"]
    absent = str(uuid.uuid4())
    for key_id in (theirs, absent, "not-a-uuid"):
        assert (await gql.ok(GET, {"id": key_id}, token=user.token))["apiKey"] is None
        for mutation, extra in (
            (REVOKE, {}),
            (SUSPEND, {}),
            (UPDATE_PERMISSIONS, {"p": ["READ_BLOCK"]}),
        ):
            error = await gql.error(mutation, {"id": key_id, **extra}, token=user.token)
            assert error["extensions"] == {"code": "NOT_FOUND"}, (mutation, key_id)
            assert error["message"] == "API key not found"
    row = await ApiKey.get(id=theirs)
    assert row.status == "ACTIVE" and row.permissions == ["READ_GRAPH"]


async def test_revoked_key_no_longer_signs_in_and_revoking_is_final(gql, user):
    created = await create_key(gql, user)
    key_id, plain = created["apiKey"]["id"], created["plainTextKey"]
    revoked = (await gql.ok(REVOKE, {"id": key_id}, token=user.token))["revokeApiKey"]
    assert revoked["status"] == "REVOKED" and revoked["revokedAt"] is not None
    assert await gql.error_code(ME, api_key=plain) == "UNAUTHENTICATED"
    for mutation, extra in (
        (REVOKE, {}),
        (SUSPEND, {}),
        (UPDATE_PERMISSIONS, {"p": ["READ_BLOCK"]}),
    ):
        assert await gql.error_code(mutation, {"id": key_id, **extra}, token=user.token) == (
            "CONFLICT"
        )
    row = await ApiKey.get(id=key_id)
    assert row.status == "REVOKED" and row.permissions == ["READ_GRAPH"]


async def test_suspended_key_no_longer_signs_in(gql, user):
    created = await create_key(gql, user)
    key_id, plain = created["apiKey"]["id"], created["plainTextKey"]
    assert (await gql.ok(SUSPEND, {"id": key_id}, token=user.token))["suspendApiKey"][
        "status"
    ] == "SUSPENDED"
    assert await gql.error_code(ME, api_key=plain) == "UNAUTHENTICATED"
    # Suspending again is harmless.
    assert (await gql.ok(SUSPEND, {"id": key_id}, token=user.token))["suspendApiKey"][
        "status"
    ] == "SUSPENDED"


async def test_update_permissions(gql, user):
    created = await create_key(gql, user, ["READ_GRAPH"])
    data = await gql.ok(
        UPDATE_PERMISSIONS,
        {"id": created["apiKey"]["id"], "p": ["EXECUTE_BLOCK", "READ_BLOCK", "EXECUTE_BLOCK"]},
        token=user.token,
    )
    assert data["updateApiKeyPermissions"]["permissions"] == ["EXECUTE_BLOCK", "READ_BLOCK"]


async def test_bad_key_input_is_refused_and_nothing_is_stored(gql, user):
    before = await ApiKey.filter(user_id=user.id).count()
    for payload in (
        {"name": "k", "permissions": []},
        {"name": "   ", "permissions": ["READ_GRAPH"]},
        {"name": "x" * 101, "permissions": ["READ_GRAPH"]},
        {"name": "k", "description": "d" * 1001, "permissions": ["READ_GRAPH"]},
        {"name": "k", "permissions": ["SUPERUSER"]},
    ):
        assert await gql.error_code(CREATE, {"input": payload}, token=user.token) == (
            "BAD_USER_INPUT"
        ), payload
    assert await ApiKey.filter(user_id=user.id).count() == before
    created = await create_key(gql, user, ["READ_GRAPH"])
    code = await gql.error_code(
        UPDATE_PERMISSIONS, {"id": created["apiKey"]["id"], "p": []}, token=user.token
    )
    assert code == "BAD_USER_INPUT"
    assert (await ApiKey.get(id=created["apiKey"]["id"])).permissions == ["READ_GRAPH"]


async def test_live_keys_are_capped_and_revoking_one_makes_room(gql, user):
    """`apiKeys` is one unpaged list: a user keeps at most 100 keys that are not revoked."""
    first = await create_key(gql, user, name="first")
    await ApiKey.bulk_create(
        [
            ApiKey(
                id=uuid.uuid4(),
                user_id=user.id,
                name=f"seeded {n}",
                key_hash=f"seeded-{user.id}-{n}",
                prefix="agpt_see",
                postfix="ded0",
                status="SUSPENDED" if n % 2 else "ACTIVE",
                permissions=["READ_GRAPH"],
            )
            for n in range(99)
        ]
    )
    payload = {"input": {"name": "one too many", "permissions": ["READ_GRAPH"]}}
    error = await gql.error(CREATE, payload, token=user.token)
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert "at most 100 keys" in error["message"]
    assert await ApiKey.filter(user_id=user.id).count() == 100
    await gql.ok(REVOKE, {"id": first["apiKey"]["id"]}, token=user.token)
    created = await create_key(gql, user, name="room again")
    assert created["apiKey"]["status"] == "ACTIVE"
    listed = (await gql.ok(LIST, token=user.token))["apiKeys"]
    assert len(listed) == 101 and listed[0]["name"] == "room again"
