"""The README's first graph run works exactly as printed."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import tempfile

from tests.agent_helpers import GRAPH_TRIGGER, ROTATE, create_credentials, llm_stack, publish
from tests.execution_helpers import wait_for_end
from tests.graph_builders import block_id, create_graph, echo_graph, link, node
from tests.harness import ROOT, graphql_ws

CLIENTS = ROOT / "tests" / "clients"


def _operation(name: str) -> str:
    blocks = re.findall(r"```graphql\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    [found] = [b for b in blocks if re.search(rf"\b(query|mutation|subscription) {name}\b", b)]
    return found


async def test_readme_first_graph_run_and_its_live_subscription(api, gql, user, worker):
    saved = await gql.ok(
        _operation("Save"),
        {
            "in": block_id("AgentInput"),
            "store": block_id("StoreValue"),
            "out": block_id("AgentOutput"),
        },
        token=user.token,
    )
    run = await gql.ok(_operation("Run"), {"graph": saved["createGraph"]["id"]}, token=user.token)
    assert run["executeGraph"]["status"] == "QUEUED"
    async with graphql_ws(api.ws_url, {"Authorization": f"Bearer {user.token}"}) as ws:
        op = await ws.subscribe(_operation("Watch"), {"id": run["executeGraph"]["id"]})
        events = [
            m["payload"]["data"]["executionEvents"]
            async for m in ws.results(op)
            if m["type"] == "next"
        ]
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs)
    assert events[-1]["execution"] == {"status": "COMPLETED", "outputs": {"result": ["hello"]}}


def _watch_script() -> str:
    blocks = re.findall(r"```js\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    [found] = [b for b in blocks if b.startswith("// watch.mjs")]
    return found


async def test_readme_web_client_watches_the_first_run(api, gql, user, worker):
    """The README's watch.mjs, run by Node with the pinned graphql-ws, prints the run live."""
    assert shutil.which("node"), "Node.js is needed for the client tests"
    saved = await gql.ok(
        _operation("Save"),
        {
            "in": block_id("AgentInput"),
            "store": block_id("StoreValue"),
            "out": block_id("AgentOutput"),
        },
        token=user.token,
    )
    run = await gql.ok(_operation("Run"), {"graph": saved["createGraph"]["id"]}, token=user.token)
    # Inside tests/clients so that Node resolves the pinned packages.
    with tempfile.NamedTemporaryFile("w", suffix=".mjs", dir=CLIENTS) as script:
        script.write(_watch_script())
        script.flush()
        process = await asyncio.create_subprocess_exec(
            "node",
            script.name,
            run["executeGraph"]["id"],
            cwd=CLIENTS,
            env={**os.environ, "TOKEN": user.token, "AGENTGRAPH_WS": api.ws_url},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, stderr.decode()
    lines = [line.split(" ", 2) for line in stdout.decode().splitlines()]
    seqs = [int(seq) for seq, _, _ in lines]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    _, last_type, last_value = lines[-1]
    assert last_type == "ExecutionStatusEvent"
    assert last_value == '{"status":"COMPLETED","outputs":{"result":["hello"]}}'
    for _, kind, value in lines[:-1]:
        assert kind in {"ExecutionStatusEvent", "NodeExecutionEvent"}, kind
        json.loads(value)


async def test_readme_store_agent_preset_and_trigger_sender(database, new_user):
    """The library, preset and webhook examples work as printed (issue 16), on a
    stack whose LLMCall is enabled (it talks to a stand-in)."""
    async with llm_stack("readme") as stack:
        await _store_agent_preset_and_trigger_sender(stack.api, stack.gql, new_user)


async def _store_agent_preset_and_trigger_sender(api, gql, new_user):
    maker, person = new_user(), new_user()
    listed = await create_graph(gql, maker, echo_graph("readme agent"))
    listing_id = publish(listed["id"])
    added = await gql.ok(_operation("Add"), {"agent": listing_id}, token=person.token)
    assert added["addStoreAgentToLibrary"]["canRun"] is True

    spec = {
        "name": "readme preset",
        "nodes": [
            node("in", "AgentInput", name="topic", type="string"),
            node("llm", "LLMCall", prompt="unused"),
            node("out", "AgentOutput", name="topic"),
        ],
        "links": [link("in", "result", "out", "value")],
    }
    graph = await create_graph(gql, person, spec)
    key = await create_credentials(gql, person)
    preset = await gql.ok(
        _operation("Preset"), {"graph": graph["id"], "key": key["id"]}, token=person.token
    )
    assert preset["createPreset"]["graphVersion"] == 1

    hook = await create_graph(
        gql,
        person,
        {
            "name": "readme hook",
            "nodes": [node("hook", "WebhookTrigger"), node("out", "AgentOutput", name="order")],
            "links": [link("hook", "payload", "out", "value")],
        },
    )
    trigger = (await gql.ok(GRAPH_TRIGGER, {"id": hook["id"]}, token=person.token))["graph"][
        "trigger"
    ]
    secret = (await gql.ok(ROTATE, {"id": trigger["id"]}, token=person.token))[
        "rotateTriggerSecret"
    ]["secret"]
    [sender] = [
        block
        for block in re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
        if "AgentGraph-Signature" in block
    ]
    namespace: dict = {}
    exec(sender, namespace)
    url = f"{api.base_url}/api/triggers/{trigger['id']}"
    answer = await asyncio.to_thread(namespace["deliver"], url, secret, {"id": 7}, "order-7")
    assert answer["status"] == "ACCEPTED" and answer["deliveryId"] == "order-7"
    done = await wait_for_end(gql, person, answer["executionId"])
    assert done["outputs"] == {"order": [{"id": 7}]}
