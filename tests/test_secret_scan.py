"""No secret ever shows: a whole flow with recognisable secrets (an LLM key, a bearer
token, a basic password, a trigger's signing secret) against servers that echo them
back, then every response, websocket message, export, log line of the API and worker,
Redis key and database column is searched for them."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis

from tests.agent_helpers import (
    CREATE_CREDENTIALS,
    CREATE_PRESET,
    DELIVERIES,
    GRAPH_TRIGGER,
    LIBRARY,
    LIST_CREDENTIALS,
    PRESETS,
    ROTATE,
    LlmStack,
    llm_stack,
    post_delivery,
)
from tests.conftest import PG_URL, REDIS_URL, TEST_ENV
from tests.execution_helpers import EXECUTION_FIELDS, wait_for_end
from tests.graph_builders import GET, GRAPH_FIELDS, link, node
from tests.harness import GraphQLClient, graphql_ws
from tests.test_live_events import EVENTS

EXECUTIONS = f"""{{ executions(first: 100) {{ edges {{ node {{ {EXECUTION_FIELDS} }} }} }} }}"""
EXPORT = f"""query($id: ID!) {{ graph(id: $id, forExport: true) {{ {GRAPH_FIELDS}
  subGraphs {{ id }} }} }}"""
HISTORY = "{ creditHistory { transactions { key description metadata amount } } }"
SCHEDULE = """mutation($input: ScheduleInput!) { createSchedule(input: $input) {
  id inputs presetId } }"""
SCHEDULES = "{ schedules { id inputs presetId } }"


class RecordingClient(GraphQLClient):
    """A GraphQL client that keeps every response body it got."""

    def __init__(self, base_url: str, seen: list[str]) -> None:
        super().__init__(base_url)
        self.seen = seen

    async def post(self, *args: Any, **kw: Any) -> httpx.Response:
        response = await super().post(*args, **kw)
        self.seen.append(response.text)
        return response


@pytest.fixture(scope="module")
async def stack(database) -> AsyncIterator[LlmStack]:
    async with llm_stack("secret-scan", LOG_LEVEL="DEBUG") as running:
        yield running


def scan_graph() -> dict:
    """A trigger, an LLM call and an HTTP request whose server echoes our headers."""
    return {
        "name": "everything with secrets",
        "nodes": [
            node("hook", "WebhookTrigger"),
            node("payload", "AgentOutput", name="payload"),
            node("in", "AgentInput", name="topic", type="string", value="tea"),
            node("llm", "LLMCall"),
            node("answer", "AgentOutput", name="answer"),
            node("get", "HttpRequest", method="POST", body={"topic": "tea"}),
            node("echo", "AgentOutput", name="echo"),
        ],
        "links": [
            link("hook", "payload", "payload", "value"),
            link("in", "result", "llm", "prompt"),
            link("llm", "response", "answer", "value"),
            link("llm", "error", "answer", "value"),
            link("get", "response", "echo", "value"),
        ],
    }


async def redis_dump(prefix: str) -> list[str]:
    redis = Redis.from_url(REDIS_URL)
    found: list[str] = []
    try:
        async for key in redis.scan_iter(match=f"{prefix}*", count=1000):
            kind = (await redis.type(key)).decode()
            if kind == "string":
                value: Any = await redis.get(key)
            elif kind == "hash":
                value = await redis.hgetall(key)
            elif kind == "list":
                value = await redis.lrange(key, 0, -1)
            elif kind == "set":
                value = await redis.smembers(key)
            elif kind == "zset":
                value = await redis.zrange(key, 0, -1)
            elif kind == "stream":
                value = await redis.xrange(key)
            else:
                value = b""
            found.append(f"{key!r} {value!r}")
    finally:
        await redis.aclose()
    return found


async def database_dump() -> list[str]:
    conn = await asyncpg.connect(PG_URL)
    try:
        tables = [
            row["table_name"]
            for row in await conn.fetch(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            )
        ]
        assert "credentials" in tables and "executions" in tables
        rows: list[str] = []
        for table in tables:
            rows += [r[0] for r in await conn.fetch(f'SELECT t::text FROM "{table}" t')]
        return rows
    finally:
        await conn.close()


async def test_no_secret_appears_anywhere(stack: LlmStack, new_user):
    seen: list[str] = []
    gql = RecordingClient(stack.api.base_url, seen)
    stand_in = stack.stand_in
    stand_in.reset()
    stand_in.echo_authorization = True
    person = new_user()
    mark = uuid.uuid4().hex
    llm_key = f"sk-CANARY-llm-{mark}"
    bearer = f"CANARY-bearer-{mark}"
    basic_password = f"CANARY-basic-{mark}"
    basic = f"canaryuser:{basic_password}"
    refused_secret = f"CANARY-refused-{mark}"
    try:
        await gql.ok("{ me { id } }", token=person.token)

        async def store(provider: str, kind: str, secret: str) -> str:
            variables = {"p": provider, "t": kind, "title": kind.lower(), "s": secret}
            created = await gql.ok(CREATE_CREDENTIALS, variables, token=person.token)
            return created["createCredentials"]["id"]

        llm_id = await store("openai", "API_KEY", llm_key)
        bearer_id = await store("example", "BEARER", bearer)
        basic_id = await store("example", "BASIC", basic)
        # A refused secret is not echoed either.
        await gql.error(
            CREATE_CREDENTIALS,
            {"p": "x", "t": "API_KEY", "title": "t", "s": refused_secret + "\n"},
            token=person.token,
        )
        await gql.ok(LIST_CREDENTIALS, token=person.token)

        spec = scan_graph()
        spec["nodes"][5]["inputDefault"]["url"] = stand_in.echo_url
        graph = (
            await gql.ok(
                "mutation($g: GraphInput!) { createGraph(graph: $g) { id } }",
                {"g": spec},
                token=person.token,
            )
        )["createGraph"]

        # A run watched live, with the LLM key and the bearer token.
        run_doc = """mutation($id: ID!, $creds: JSON!, $p: ID) {
          executeGraph(graphId: $id, credentialsInputs: $creds, presetId: $p) { id } }"""
        run = (
            await gql.ok(
                run_doc,
                {
                    "id": graph["id"],
                    "creds": {"llm_credentials": llm_id, "http_credentials": bearer_id},
                },
                token=person.token,
            )
        )["executeGraph"]
        async with graphql_ws(stack.api.ws_url, {"Authorization": f"Bearer {person.token}"}) as ws:
            op_id = await ws.subscribe(EVENTS, {"id": run["id"]})
            async for message in ws.results(op_id, timeout=30):
                seen.append(json.dumps(message))
        done = await wait_for_end(gql, person, run["id"])
        assert done["status"] == "COMPLETED", done
        assert done["outputs"]["answer"] == ["Hello from the model. (you sent Bearer ***)"]
        assert done["outputs"]["echo"][0]["headers"]["Authorization"] == "Bearer ***"

        # A preset with basic credentials, run once, and a schedule that names them.
        preset = (
            await gql.ok(
                CREATE_PRESET,
                {
                    "input": {
                        "graphId": graph["id"],
                        "name": "with basic",
                        "credentialsInputs": {
                            "llm_credentials": llm_id,
                            "http_credentials": basic_id,
                        },
                    }
                },
                token=person.token,
            )
        )["createPreset"]
        second = (
            await gql.ok(
                run_doc, {"id": graph["id"], "creds": {}, "p": preset["id"]}, token=person.token
            )
        )["executeGraph"]
        done = await wait_for_end(gql, person, second["id"])
        assert done["outputs"]["echo"][0]["headers"]["Authorization"] == "Basic ***"
        await gql.ok(
            SCHEDULE,
            {
                "input": {
                    "graphId": graph["id"],
                    "name": "nightly",
                    "cron": "0 0 1 1 *",
                    "presetId": preset["id"],
                    "credentials": {"http_credentials": bearer_id},
                }
            },
            token=person.token,
        )

        # The provider refuses the key and quotes it in its error.
        stand_in.status = 401
        failed = (
            await gql.ok(
                run_doc,
                {"id": graph["id"], "creds": {"llm_credentials": llm_id}},
                token=person.token,
            )
        )["executeGraph"]
        done = await wait_for_end(gql, person, failed["id"])
        assert done["status"] == "FAILED"
        assert "Incorrect API key provided: Bearer ***" in done["stats"]["error"]
        stand_in.status = 200

        # The preset's trigger: its secret is shown once, to rotate it.
        trigger_id = preset["trigger"]["id"]
        rotated = await gql.post(ROTATE, {"id": trigger_id}, token=person.token)
        trigger_secret = rotated.json()["data"]["rotateTriggerSecret"]["secret"]
        rotation_response = seen.pop()  # the one place the trigger secret may appear
        assert trigger_secret in rotation_response
        for body in (b'{"order": 1}', b"not json"):
            response = await post_delivery(stack.api.base_url, trigger_id, trigger_secret, body)
            seen.append(response.text)
        bad = await post_delivery(stack.api.base_url, trigger_id, "agwh_wrong", b"{}")
        seen.append(bad.text)
        accepted = json.loads(seen[-3])
        await wait_for_end(gql, person, accepted["executionId"])

        # Everything a client can read back.
        await gql.ok(EXPORT, {"id": graph["id"]}, token=person.token)
        await gql.ok(GET, {"id": graph["id"]}, token=person.token)
        await gql.ok(GRAPH_TRIGGER, {"id": graph["id"]}, token=person.token)
        await gql.ok(DELIVERIES, {"id": graph["id"]}, token=person.token)
        await gql.ok(EXECUTIONS, token=person.token)
        await gql.ok(PRESETS, token=person.token)
        await gql.ok(LIBRARY, token=person.token)
        await gql.ok(SCHEDULES, token=person.token)
        await gql.ok(HISTORY, token=person.token)
    finally:
        await gql.aclose()

    # The secrets were really used: the servers got them.
    sent = [r["headers"].get("Authorization", "") for r in stand_in.requests]
    assert f"Bearer {llm_key}" in sent and f"Bearer {bearer}" in sent
    assert "Basic " + base64.b64encode(basic.encode()).decode() in sent

    secrets = {
        "llm key": llm_key,
        "bearer": bearer,
        "basic password": basic_password,
        "basic header": base64.b64encode(basic.encode()).decode(),
        "refused secret": refused_secret,
        "trigger secret": trigger_secret,
    }
    places = {
        "responses": seen,
        "api log": [stack.api.log()],
        "worker log": [stack.worker.log()],
        "redis": await redis_dump(TEST_ENV["REDIS_PREFIX"]),
        "database": await database_dump(),
    }
    assert len(places["database"]) > 10 and len(places["redis"]) > 5
    assert "DEBUG" in stack.worker.log() or "debug" in stack.worker.log().lower()
    leaks = [
        (what, where, text[max(0, text.find(secret) - 80) : text.find(secret) + 80])
        for what, secret in secrets.items()
        for where, texts in places.items()
        for text in texts
        if secret in text
    ]
    assert leaks == []
