"""What the library, preset, credentials and trigger tests share: documents, a store
publisher (the CLI), signed webhook deliveries, and a stack whose LLM is a stand-in."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from app.services.trigger_deliveries import sign
from tests.conftest import TEST_ENV
from tests.graph_builders import link, node
from tests.harness import ROOT, ApiServer, GraphQLClient, WorkerProcess
from tests.llm_stand_in import StandIn, start_stand_in

RECOMMENDED = "{ recommendedAgents { id graphId graphVersion name creator runs rating myRating } }"
LIBRARY_FIELDS = """id graphId graphVersion name description creator isCreatedByUser isFavorite
  canRun updateAvailable latestVersion storeAgentId createdAt updatedAt"""
LIBRARY = f"""query($search: String, $first: Int! = 50, $after: String) {{
  libraryAgents(search: $search, first: $first, after: $after) {{
    totalCount pageInfo {{ hasNextPage endCursor }}
    edges {{ cursor node {{ {LIBRARY_FIELDS} }} }} }} }}"""
ADD = f"""mutation($id: ID!) {{ addStoreAgentToLibrary(listingId: $id) {{ {LIBRARY_FIELDS} }} }}"""
UPDATE_LIBRARY = f"""mutation($id: ID!, $v: Int, $fav: Boolean) {{
  updateLibraryAgent(id: $id, version: $v, isFavorite: $fav) {{ {LIBRARY_FIELDS} }} }}"""
REMOVE = "mutation($id: ID!) { removeLibraryAgent(id: $id) }"
RATE = """mutation($id: ID!, $s: Int!) { rateStoreAgent(listingId: $id, score: $s) {
  id runs rating myRating } }"""

CREDENTIALS_FIELDS = "id provider type title createdAt lastUsedAt"
CREATE_CREDENTIALS = f"""mutation($p: String!, $t: CredentialsType!, $title: String!,
  $s: String!) {{ createCredentials(provider: $p, type: $t, title: $title, secret: $s) {{
  {CREDENTIALS_FIELDS} }} }}"""
LIST_CREDENTIALS = f"query($p: String) {{ credentials(provider: $p) {{ {CREDENTIALS_FIELDS} }} }}"
DELETE_CREDENTIALS = "mutation($id: ID!) { deleteCredentials(id: $id) }"

PRESET_FIELDS = """id graphId graphVersion name description inputs credentialsInputs createdAt
  updatedAt trigger { id url isEnabled presetId }"""
CREATE_PRESET = f"""mutation($input: PresetInput!) {{ createPreset(input: $input) {{
  {PRESET_FIELDS} }} }}"""
UPDATE_PRESET = f"""mutation($id: ID!, $input: PresetUpdateInput!) {{
  updatePreset(id: $id, input: $input) {{ {PRESET_FIELDS} }} }}"""
DELETE_PRESET = "mutation($id: ID!) { deletePreset(id: $id) }"
PRESETS = f"query($g: ID) {{ presets(graphId: $g) {{ {PRESET_FIELDS} }} }}"

EXECUTE = """mutation($id: ID!, $inputs: JSON! = {}, $creds: JSON! = {}, $v: Int,
  $preset: ID, $s: GraphSource) {
  executeGraph(graphId: $id, inputs: $inputs, credentialsInputs: $creds, version: $v,
    presetId: $preset, source: $s) { id status graphId graphVersion inputs source } }"""

GRAPH_TRIGGER = """query($id: ID!) { graph(id: $id) { id version
  trigger { id url isEnabled presetId createdAt secretRotatedAt } } }"""
ROTATE = "mutation($id: ID!) { rotateTriggerSecret(id: $id) { secret trigger { id url } } }"
SET_ENABLED = """mutation($id: ID!, $on: Boolean!) { setTriggerEnabled(id: $id, isEnabled: $on) {
  id isEnabled } }"""
DELIVERIES = """query($id: ID!, $first: Int! = 25, $after: String) { graph(id: $id) {
  triggerDeliveries(first: $first, after: $after) { totalCount
    pageInfo { hasNextPage endCursor }
    edges { cursor node { id triggerId deliveryId status executionId error attempts
      receivedAt } } } } }"""


def publish(graph_id: str, *integrations: str) -> str:
    """`agentgraph store publish`; returns the new listing version (StoreAgent) id."""
    extra = [arg for name in integrations for arg in ("--integration", name)]
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "store", "publish", graph_id, *extra],
        cwd=ROOT,
        env={**os.environ, **TEST_ENV},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    match = re.search(r"as listing version ([0-9a-f-]{36})", result.stdout)
    assert match, result.stdout
    return match.group(1)


def llm_graph(name: str = "Summarizer", wait_seconds: float | None = None) -> dict[str, Any]:
    """input 'topic' -> (Wait) -> LLMCall -> output 'answer'."""
    nodes = [
        node("in", "AgentInput", name="topic", type="string"),
        node("llm", "LLMCall"),
        node("out", "AgentOutput", name="answer"),
    ]
    links = [link("llm", "response", "out", "value")]
    if wait_seconds is None:
        links.append(link("in", "result", "llm", "prompt"))
    else:
        nodes.append(node("wait", "Wait", seconds=wait_seconds))
        links += [link("in", "result", "wait", "input"), link("wait", "output", "llm", "prompt")]
    return {
        "name": name,
        "description": "asks a model about a topic",
        "nodes": nodes,
        "links": links,
    }


def trigger_graph(name: str = "hook", required_input: bool = False) -> dict[str, Any]:
    """WebhookTrigger payload -> output 'payload' (and an input 'greeting' -> output 'greeting')."""
    greeting = {"name": "greeting", "type": "string"}
    if not required_input:
        greeting["value"] = "hello"
    return {
        "name": name,
        "nodes": [
            node("hook", "WebhookTrigger", description="orders"),
            node("out", "AgentOutput", name="payload"),
            node("in", "AgentInput", **greeting),
            node("greet", "AgentOutput", name="greeting"),
        ],
        "links": [link("hook", "payload", "out", "value"), link("in", "result", "greet", "value")],
    }


async def create_credentials(
    gql,
    user,
    provider: str = "openai",
    kind: str = "API_KEY",
    secret: str | None = None,
    title: str = "my key",
) -> dict:
    variables = {
        "p": provider,
        "t": kind,
        "title": title,
        "s": secret or f"sk-{uuid.uuid4().hex}",
    }
    return (await gql.ok(CREATE_CREDENTIALS, variables, token=user.token))["createCredentials"]


async def execute(gql, user, graph_id: str, **kw: Any) -> dict:
    variables = {"id": graph_id, **kw}
    return (await gql.ok(EXECUTE, variables, token=user.token))["executeGraph"]


async def post_delivery(
    base_url: str,
    trigger_id: str,
    secret: str | None,
    body: bytes,
    *,
    timestamp: int | None = None,
    delivery_id: str | None = None,
    signature: str | None = None,
) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers["AgentGraph-Signature"] = signature
    elif secret is not None:
        headers["AgentGraph-Signature"] = sign(secret, body, timestamp)
    if delivery_id is not None:
        headers["AgentGraph-Delivery-Id"] = delivery_id
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        return await client.post(f"/api/triggers/{trigger_id}", content=body, headers=headers)


@dataclass
class LlmStack:
    """An API and a worker of their own whose LLMCall talks to a local stand-in (and
    whose HttpRequest may reach it), with no operator key: every run brings its own."""

    api: ApiServer
    worker: WorkerProcess
    gql: GraphQLClient
    stand_in: StandIn


@asynccontextmanager
async def llm_stack(name: str, **extra: str) -> AsyncIterator[LlmStack]:
    stand_in, runner = await start_stand_in()
    extra_env = {
        "REDIS_PREFIX": f"{TEST_ENV['REDIS_PREFIX']}{name}-{uuid.uuid4().hex[:8]}:",
        "LLM_API_BASE": stand_in.api_base,
        "LLM_API_KEY": "",
        "ALLOW_PRIVATE_HTTP": "true",
        # Schedules belong to the session stack's queue.
        "SCHEDULER_ENABLED": "false",
        **extra,
    }
    api = ApiServer(TEST_ENV, extra_env=extra_env)
    worker = WorkerProcess(TEST_ENV, extra_env=extra_env)
    await api.start()
    try:
        await worker.start()
        try:
            client = GraphQLClient(api.base_url)
            try:
                yield LlmStack(api, worker, client, stand_in)
            finally:
                await client.aclose()
        finally:
            await worker.stop()
    finally:
        await api.stop()
        await runner.cleanup()
