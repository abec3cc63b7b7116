"""The client libraries web apps are built from, unmodified, against a real
server (issue 11): the stock graphql-ws client, Apollo Client 4 over its
websocket link and over HttpLink alone (multipart subscriptions), and
graphql-sse. Each runs in Node (tests/clients/, pinned in its package.json and
installed by `make install`), starts a run, watches it live, and resumes with
afterSeq from several points; Apollo also uses the cache set up exactly as the
README documents it."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from typing import Any

import pytest

from tests.graph_builders import create_graph, echo_graph, link, node
from tests.harness import ROOT

CLIENTS = ROOT / "tests" / "clients"
GENERATED = CLIENTS / ".generated"

# Long enough that a client subscribing right after executeGraph sees the run live.
SLOW = {
    "name": "slow echo",
    "nodes": [
        node("w", "Wait", input="done", seconds=1.5),
        node("o", "AgentOutput", name="o"),
    ],
    "links": [link("w", "output", "o", "value")],
}


def _require_clients() -> None:
    assert shutil.which("node"), "Node.js is needed for the client tests"
    assert (CLIENTS / "node_modules" / ".installed").exists(), (
        "the Node clients are not installed: run `make install`"
    )


async def run_client(script: str, config: dict[str, Any], timeout: float = 90.0) -> dict:
    """Runs one Node client script; returns the JSON it prints."""
    _require_clients()
    process = await asyncio.create_subprocess_exec(
        "node",
        script,
        json.dumps({**config, "timeoutMs": int(timeout * 1000)}),
        cwd=CLIENTS,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout + 10)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, f"{script} failed:\n{stderr.decode()}\n{stdout.decode()}"
    return json.loads(stdout.decode().strip().splitlines()[-1])


def readme_cache_module() -> str:
    """The README's Apollo cache set-up, written where Node resolves @apollo/client."""
    readme = (ROOT / "README.md").read_text()
    [source] = [
        b for b in re.findall(r"```js\n(.*?)```", readme, re.S) if "agentgraph-cache.js" in b
    ]
    GENERATED.mkdir(exist_ok=True)
    (GENERATED / "agentgraph-cache.js").write_text(source)
    shutil.copy(ROOT / "possible-types.json", GENERATED / "possible-types.json")
    return (GENERATED / "agentgraph-cache.js").as_uri()


def strip_typenames(value: Any) -> Any:
    """Apollo adds __typename to every object it fetches; the others do not."""
    if isinstance(value, dict):
        return {
            k: strip_typenames(v)
            for k, v in value.items()
            if k != "__typename" or "seq" in value  # keep the event's own type
        }
    if isinstance(value, list):
        return [strip_typenames(v) for v in value]
    return value


def check_watched_live_and_resumed(result: dict, outputs: dict) -> None:
    full = result["full"]
    seqs = [e["seq"] for e in full]
    assert seqs == list(range(1, len(full) + 1)), seqs
    assert full[0]["execution"]["status"] == "QUEUED"
    assert full[-1]["execution"]["status"] == "COMPLETED"
    assert full[-1]["execution"]["outputs"] == outputs

    live = result["live"]
    snapshot = live[0]
    assert snapshot["__typename"] == "ExecutionStatusEvent"
    assert snapshot["execution"]["id"] == result["id"]
    # Subscribed while the run was under way, then every later event live.
    assert snapshot["execution"]["status"] in ("QUEUED", "RUNNING"), snapshot
    assert live[1:] == full[snapshot["seq"] :]

    for after, events in result["resumed"].items():
        # No snapshot: exactly what came after that seq, in order.
        assert events == full[int(after) :], after
    assert str(len(full)) in result["resumed"]  # resuming after the end: nothing


async def test_graphql_ws_client_watches_live_and_resumes(api, gql, user, worker):
    graph = await create_graph(gql, user, SLOW)
    result = await run_client(
        "graphql_ws_client.mjs",
        {"wsUrl": api.ws_url, "token": user.token, "graphId": graph["id"]},
    )
    check_watched_live_and_resumed(result, {"o": ["done"]})


async def test_graphql_sse_client_watches_live_and_resumes(api, gql, user, worker):
    graph = await create_graph(gql, user, SLOW)
    result = await run_client(
        "graphql_sse_client.mjs",
        {"httpUrl": api.base_url + "/graphql", "token": user.token, "graphId": graph["id"]},
    )
    check_watched_live_and_resumed(result, {"o": ["done"]})


@pytest.mark.parametrize("mode", ["ws", "http"])
async def test_apollo_client_with_the_documented_cache(api, gql, user, worker, mode):
    """mode ws: GraphQLWsLink for subscriptions; mode http: HttpLink alone, so
    subscriptions go over Apollo's multipart protocol."""
    graph = await create_graph(gql, user, SLOW)
    result = await run_client(
        "apollo_client.mjs",
        {
            "mode": mode,
            "httpUrl": api.base_url + "/graphql",
            "wsUrl": api.ws_url,
            "token": user.token,
            "graphId": graph["id"],
            "graphInput": echo_graph("cached"),
            "cacheModule": readme_cache_module(),
        },
    )
    # Two versions of one graph stay apart in the normalised cache.
    assert sorted(result["versions"]) == [[1, "cached"], [2, "renamed"]]
    # The mutation's answer changed what `me` shows, read from the cache alone.
    assert result["dailyLimit"]["cached"] == result["dailyLimit"]["set"]
    # Events kept the cached Execution current.
    assert result["cachedExecution"]["status"] == "COMPLETED"
    assert result["cachedExecution"]["outputs"] == {"o": ["done"]}
    check_watched_live_and_resumed(strip_typenames(result), {"o": ["done"]})
    # Not one "Cache data may be lost" or any other warning.
    assert result["warnings"] == []
