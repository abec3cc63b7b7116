"""Stored credentials: metadata only out, encrypted at rest with rotation, managed by a
signed-in person only, and checked against the blocks of a run (SEMANTICS.md §6)."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import uuid
from types import SimpleNamespace

import pytest
from cryptography.fernet import Fernet

from app.blocks.base import BlockError
from app.blocks.http import HttpRequest
from app.models import Execution, StoredCredentials
from app.services import credentials as credentials_service
from app.services.secret_box import SecretBox, secret_box
from app.settings import DEV_CREDENTIALS_KEY, InsecureSettingsError, Settings
from tests.agent_helpers import (
    CREATE_CREDENTIALS,
    DELETE_CREDENTIALS,
    EXECUTE,
    LIST_CREDENTIALS,
    create_credentials,
)
from tests.conftest import TEST_ENV
from tests.graph_builders import create_graph, link, node, node_ids
from tests.harness import ROOT
from tests.test_api_keys import create_key

SCHEMA = "query($id: ID!) { graph(id: $id) { credentialsInputSchema } }"


def fetch_graph() -> dict:
    """input 'url' -> HttpRequest -> output 'status', and an LLMCall on the side."""
    return {
        "name": "fetcher",
        "nodes": [
            node("in", "AgentInput", name="url", type="string"),
            node("get", "HttpRequest"),
            node("out", "AgentOutput", name="status"),
        ],
        "links": [link("in", "result", "get", "url"), link("get", "status_code", "out", "value")],
    }


async def test_created_credentials_show_metadata_only_and_are_encrypted_at_rest(
    gql, user, settings
):
    secret = "sk-live-" + uuid.uuid4().hex
    response = await gql.post(
        CREATE_CREDENTIALS,
        {"p": " OpenAI ", "t": "API_KEY", "title": " work key ", "s": secret},
        token=user.token,
    )
    assert secret not in response.text
    created = response.json()["data"]["createCredentials"]
    assert created["provider"] == "openai" and created["type"] == "API_KEY"
    assert created["title"] == "work key" and created["lastUsedAt"] is None
    listed = await gql.post(LIST_CREDENTIALS, {"p": "openai"}, token=user.token)
    assert secret not in listed.text
    assert [c["id"] for c in listed.json()["data"]["credentials"]] == [created["id"]]
    assert (await gql.ok(LIST_CREDENTIALS, {"p": "github"}, token=user.token))["credentials"] == []
    row = await StoredCredentials.get(id=created["id"])
    assert secret not in row.encrypted_secret
    assert secret_box(settings).decrypt(row.encrypted_secret) == secret
    # Only the run's key decrypts it.
    with pytest.raises(Exception):  # noqa: B017 - cryptography's own error type
        SecretBox((Fernet.generate_key().decode(),)).decrypt(row.encrypted_secret)


async def test_managing_credentials_needs_a_signed_in_person(gql, user):
    key = (await create_key(gql, user, ["READ_GRAPH", "EXECUTE_GRAPH", "MANAGE_SCHEDULES"]))[
        "plainTextKey"
    ]
    mine = await create_credentials(gql, user)
    for document, variables in (
        (LIST_CREDENTIALS, {}),
        (CREATE_CREDENTIALS, {"p": "openai", "t": "API_KEY", "title": "t", "s": "sk-xyz-123"}),
        (DELETE_CREDENTIALS, {"id": mine["id"]}),
    ):
        assert await gql.error_code(document, variables, api_key=key) == "FORBIDDEN"
        assert await gql.error_code(document, variables) == "UNAUTHENTICATED"
    assert await StoredCredentials.filter(user_id=user.id).count() == 1


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"p": "Open AI!"}, "provider"),
        ({"p": ""}, "provider"),
        ({"p": "x" * 65}, "provider"),
        ({"title": "  "}, "title"),
        ({"title": "t" * 201}, "title"),
        ({"s": ""}, "secret"),
        ({"s": "short"}, "secret"),
        ({"s": "canary-secret\r\nX-Injected: 1"}, "secret"),
        ({"s": "canary-secret" + "x" * 10_000}, "secret"),
        ({"t": "BASIC", "s": "canary-secret-without-a-colon"}, "secret"),
        ({"t": "BASIC", "s": ":canary-secret-without-user"}, "secret"),
    ],
)
async def test_bad_credentials_are_refused_without_echoing_the_secret(gql, user, overrides, field):
    variables = {"p": "openai", "t": "API_KEY", "title": "t", "s": "sk-fine-enough", **overrides}
    error = await gql.error(CREATE_CREDENTIALS, variables, token=user.token)
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["extensions"].get("field") == field
    assert "canary-secret" not in str(error)
    assert not await StoredCredentials.filter(user_id=user.id).exists()


async def test_a_user_keeps_at_most_a_thousand_credentials(gql, user, settings):
    box = secret_box(settings)
    await StoredCredentials.bulk_create(
        [
            StoredCredentials(
                id=uuid.uuid4(),
                user_id=user.id,
                provider="bulk",
                type="API_KEY",
                title=f"k{i}",
                encrypted_secret=box.encrypt("s"),
            )
            for i in range(999)
        ]
    )
    await create_credentials(gql, user)
    variables = {"p": "openai", "t": "API_KEY", "title": "one too many", "s": "sk-xyz-123"}
    assert await gql.error_code(CREATE_CREDENTIALS, variables, token=user.token) == (
        "BAD_USER_INPUT"
    )
    assert await StoredCredentials.filter(user_id=user.id).count() == 1000


async def test_delete_credentials(gql, user, new_user):
    mine = await create_credentials(gql, user)
    stranger = new_user()
    theirs = await create_credentials(gql, stranger)
    for unknown in (theirs["id"], str(uuid.uuid4()), "nope"):
        error = await gql.error(DELETE_CREDENTIALS, {"id": unknown}, token=user.token)
        assert error["extensions"]["code"] == "NOT_FOUND"
        assert error["message"] == "Credentials not found"
    assert await StoredCredentials.filter(id=theirs["id"]).exists()
    deleted = (await gql.ok(DELETE_CREDENTIALS, {"id": mine["id"]}, token=user.token))[
        "deleteCredentials"
    ]
    assert deleted == mine["id"]
    assert await gql.error_code(DELETE_CREDENTIALS, {"id": mine["id"]}, token=user.token) == (
        "NOT_FOUND"
    )


async def test_credentials_input_schema_comes_from_the_blocks(gql, user):
    spec = fetch_graph()
    spec["nodes"].append(node("llm", "LLMCall", prompt="hi"))
    graph = await create_graph(gql, user, spec)
    schema = (await gql.ok(SCHEMA, {"id": graph["id"]}, token=user.token))["graph"][
        "credentialsInputSchema"
    ]
    assert set(schema["properties"]) == {"http_credentials", "llm_credentials"}
    # No operator LLM key on this server: a run must bring one. HTTP credentials are optional.
    assert schema["required"] == ["llm_credentials"]
    http = schema["properties"]["http_credentials"]
    assert http["credentials_types"] == ["BEARER", "BASIC"] and "credentials_provider" not in http
    echo = await create_graph(gql, user)
    empty = (await gql.ok(SCHEMA, {"id": echo["id"]}, token=user.token))["graph"]
    assert empty["credentialsInputSchema"] == {"type": "object", "properties": {}, "required": []}


async def test_runs_with_wrong_credentials_fail_validation_and_start_nothing(gql, user, new_user):
    spec = fetch_graph()
    graph = await create_graph(gql, user, spec)
    get_node = node_ids(spec, graph)["get"]
    stranger = new_user()
    theirs = await create_credentials(gql, stranger, provider="example", kind="BEARER")
    api_key = await create_credentials(gql, user, provider="example", kind="API_KEY")
    cases = [
        (
            {"http_credentials": theirs["id"]},
            {get_node: {"http_credentials": "no such credentials"}},
        ),
        (
            {"http_credentials": str(uuid.uuid4())},
            {get_node: {"http_credentials": "no such credentials"}},
        ),
        ({"http_credentials": 42}, {get_node: {"http_credentials": "no such credentials"}}),
        (
            {"http_credentials": api_key["id"]},
            {get_node: {"http_credentials": "needs credentials of type BEARER or BASIC"}},
        ),
    ]
    for creds, node_errors in cases:
        error = await gql.error(
            EXECUTE,
            {"id": graph["id"], "inputs": {"url": "https://example.com"}, "creds": creds},
            token=user.token,
        )
        assert error["extensions"]["code"] == "GRAPH_VALIDATION_FAILED"
        assert error["extensions"]["nodeErrors"] == node_errors
    error = await gql.error(
        EXECUTE,
        {
            "id": graph["id"],
            "inputs": {"url": "https://x.example"},
            "creds": {"nope": api_key["id"]},
        },
        token=user.token,
    )
    assert error["message"] == "Unknown credentials input(s): nope"
    code = await gql.error_code(
        EXECUTE, {"id": graph["id"], "inputs": {"url": "u"}, "creds": [1]}, token=user.token
    )
    assert code == "BAD_USER_INPUT"
    assert not await Execution.filter(user_id=user.id).exists()


# ------------------------------------------------------------------ keys


async def test_old_keys_still_decrypt_and_reencrypt_moves_secrets_to_the_first_key(user):
    old_key = Fernet.generate_key().decode()
    secret = "bearer-" + uuid.uuid4().hex
    row = await StoredCredentials.create(
        id=uuid.uuid4(),
        user_id=user.id,
        provider="example",
        type="BEARER",
        title="under an old key",
        encrypted_secret=SecretBox((old_key,)).encrypt(secret),
    )
    run = SimpleNamespace(user_id=user.id, credentials_inputs={"http_credentials": str(row.id)})
    current = TEST_ENV["CREDENTIALS_ENCRYPTION_KEY"]
    rotated = Settings(CREDENTIALS_ENCRYPTION_KEY=f"{current},{old_key}")
    resolved = await credentials_service.node_credentials(rotated, run, HttpRequest())
    assert resolved["http_credentials"].secret == secret
    assert secret not in repr(resolved)
    with pytest.raises(BlockError) as failure:
        await credentials_service.node_credentials(
            Settings(CREDENTIALS_ENCRYPTION_KEY=current), run, HttpRequest()
        )
    assert "cannot be decrypted" in str(failure.value) and secret not in str(failure.value)

    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "app.cli", "credentials", "reencrypt"],
        cwd=ROOT,
        env={**os.environ, **TEST_ENV, "CREDENTIALS_ENCRYPTION_KEY": f"{current},{old_key}"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "re-encrypted" in result.stdout
    await row.refresh_from_db()
    assert SecretBox((current,)).decrypt(row.encrypted_secret) == secret
    resolved = await credentials_service.node_credentials(
        Settings(CREDENTIALS_ENCRYPTION_KEY=current), run, HttpRequest()
    )
    assert resolved["http_credentials"].secret == secret
    await row.refresh_from_db()
    assert row.last_used_at is not None


def test_production_refuses_to_start_without_a_credentials_key():
    production = {
        "ENVIRONMENT": "production",
        "JWT_SECRET": "a-real-secret-0123456789abcdef0123456789",
        "API_KEY_PEPPER": "a-real-pepper",
    }
    with pytest.raises(InsecureSettingsError, match="CREDENTIALS_ENCRYPTION_KEY"):
        Settings(**production, CREDENTIALS_ENCRYPTION_KEY=None).check_secrets()
    malformed = "not-a-fernet-key-but-a-secret-value"
    with pytest.raises(InsecureSettingsError) as refused:
        Settings(**production, CREDENTIALS_ENCRYPTION_KEY=malformed).check_secrets()
    assert malformed not in str(refused.value) and "key 1" in str(refused.value)
    good = Fernet.generate_key().decode()
    Settings(**production, CREDENTIALS_ENCRYPTION_KEY=f" {good} , {good} ").check_secrets()


def test_the_api_process_refuses_to_start_in_production_without_the_key():
    env = {**os.environ, **TEST_ENV}
    env.pop("CREDENTIALS_ENCRYPTION_KEY")
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "serve", "--port", "0"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "CREDENTIALS_ENCRYPTION_KEY" in result.stdout + result.stderr


def test_dev_derives_a_key_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="app.settings"):
        Settings(ENVIRONMENT="dev", CREDENTIALS_ENCRYPTION_KEY=None).check_secrets()
    assert "CREDENTIALS_ENCRYPTION_KEY" in caplog.text
    dev = Settings(ENVIRONMENT="dev", CREDENTIALS_ENCRYPTION_KEY=None)
    # The same key every start, so `make dev` keeps its stored credentials readable.
    assert dev.credentials_encryption_keys == [DEV_CREDENTIALS_KEY]
    Fernet(DEV_CREDENTIALS_KEY)
