"""The README's first graph run works exactly as printed."""

from __future__ import annotations

import re

from tests.graph_builders import block_id
from tests.harness import ROOT, graphql_ws


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
