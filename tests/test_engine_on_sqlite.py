"""The engine on SQLite (what `make dev` runs): the ORM store does what the
PostgreSQL one does, one step per shielded transaction."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid

from tests.conftest import TEST_ENV
from tests.execution_helpers import execute, wait_for_end, wait_for_node
from tests.graph_builders import create_graph, link, node, node_ids
from tests.harness import ROOT, ApiServer, GraphQLClient, TestUser, WorkerProcess

STOP = "mutation($id: ID!) { stopExecution(id: $id) { id status } }"


async def _sqlite_env(tmp_path) -> dict[str, str]:
    env = {
        **TEST_ENV,
        "DATABASE_URL": f"sqlite://{tmp_path}/engine.sqlite3",
        "REDIS_PREFIX": f"{TEST_ENV['REDIS_PREFIX']}sqlite-{uuid.uuid4().hex[:8]}:",
    }
    await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "app.cli", "migrate"],
        cwd=ROOT,
        env={**os.environ, **env},
        check=True,
        capture_output=True,
    )
    return env


async def test_runs_and_stops_on_sqlite(tmp_path, settings):
    env = await _sqlite_env(tmp_path)
    api, worker = ApiServer(env), WorkerProcess(env)
    await api.start()
    await worker.start()
    gql = GraphQLClient(api.base_url)
    try:
        person = TestUser.fresh(settings)
        await gql.ok("{ me { id } }", token=person.token)
        spec = {
            "name": "fan out",
            "nodes": [
                node("in", "AgentInput", name="items", type="array"),
                node("each", "ForEach"),
                node("keep", "StoreValue"),
                node("out", "AgentOutput", name="o"),
            ],
            "links": [
                link("in", "result", "each", "items"),
                link("each", "item", "keep", "input"),
                link("keep", "output", "out", "value"),
            ],
        }
        graph = await create_graph(gql, person, spec)
        run = await execute(gql, person, graph["id"], {"items": [1, 2, 3]})
        done = await wait_for_end(gql, person, run["id"])
        assert done["status"] == "COMPLETED", done
        assert sorted(done["outputs"]["o"]) == [1, 2, 3]
        assert done["stats"]["nodeCount"] == 8

        waiting = {
            "name": "waits",
            "nodes": [node("w", "Wait", input="x", seconds=30), node("o", "AgentOutput", name="o")],
            "links": [link("w", "output", "o", "value")],
        }
        graph = await create_graph(gql, person, waiting)
        run = await execute(gql, person, graph["id"])
        await wait_for_node(gql, person, run["id"], node_ids(waiting, graph)["w"], {"RUNNING"})
        stopped = (await gql.ok(STOP, {"id": run["id"]}, token=person.token))["stopExecution"]
        assert stopped["status"] == "TERMINATED"
        done = await wait_for_end(gql, person, run["id"])
        assert [n["status"] for n in done["nodeExecutions"]] == ["TERMINATED"]
        assert done["stats"]["cost"] >= 1  # the stopped Wait paid for its seconds

        # Human review: the run waits in REVIEW and resumes with the edited data.
        asks = {
            "name": "asks",
            "nodes": [
                node("ask", "HumanReview", data="draft", message="ok?"),
                node("o", "AgentOutput", name="o"),
            ],
            "links": [link("ask", "approved", "o", "value")],
        }
        graph = await create_graph(gql, person, asks)
        run = await execute(gql, person, graph["id"])
        pending_query = "query($id: ID!) { execution(id: $id) { status pendingReviews { id } } }"
        for _ in range(600):
            got = (await gql.ok(pending_query, {"id": run["id"]}, token=person.token))["execution"]
            if got["status"] == "REVIEW":
                break
            await asyncio.sleep(0.05)
        [review] = got["pendingReviews"]
        await gql.ok(
            "mutation($id: ID!) { reviewNode(nodeExecutionId: $id, approve: true, "
            'data: "final") { status } }',
            {"id": review["id"]},
            token=person.token,
        )
        done = await wait_for_end(gql, person, run["id"])
        assert done["status"] == "COMPLETED" and done["outputs"] == {"o": ["final"]}, done
    finally:
        await gql.aclose()
        await worker.stop()
        await api.stop()


async def test_one_to_one_rows_change_on_sqlite(tmp_path, settings):
    """Onboarding, notification preferences and auto top-up are one row per user,
    keyed by the user's id; on SQLite the ORM's save() bound that key raw and
    failed, so a user's second executeGraph answered INTERNAL (its run was stored
    and queued all the same: a client retrying it ran it twice)."""
    env = await _sqlite_env(tmp_path)
    api, worker = ApiServer(env), WorkerProcess(env)
    await api.start()
    await worker.start()
    gql = GraphQLClient(api.base_url)
    try:
        person = TestUser.fresh(settings)
        await gql.ok("{ me { id } }", token=person.token)
        graph = await create_graph(gql, person)
        runs = [await execute(gql, person, graph["id"], {"text": f"t{i}"}) for i in range(3)]
        runs += await asyncio.gather(
            *(execute(gql, person, graph["id"], {"text": f"c{i}"}) for i in range(5))
        )
        for run in runs:
            assert (await wait_for_end(gql, person, run["id"]))["status"] == "COMPLETED"
        listed = await gql.ok(
            "{ executions(first: 100) { edges { node { id } } } }", token=person.token
        )
        assert len(listed["executions"]["edges"]) == len(runs)
        onboarding = await gql.ok("{ onboarding { completedSteps } }", token=person.token)
        assert "RE_RUN_AGENT" in onboarding["onboarding"]["completedSteps"]

        prefs = """mutation($i: NotificationPreferencesInput!) {
          updateNotificationPreferences(input: $i) { dailyLimit } }"""
        for limit in (3, 4):
            changed = await gql.ok(prefs, {"i": {"dailyLimit": limit}}, token=person.token)
            assert changed["updateNotificationPreferences"]["dailyLimit"] == limit
        top_up = """mutation($t: Int!) {
          configureAutoTopUp(threshold: $t, amount: 0) { threshold amount } }"""
        for threshold in (5, 6):
            configured = await gql.ok(top_up, {"t": threshold}, token=person.token)
            assert configured["configureAutoTopUp"] == {"threshold": threshold, "amount": 0}
        shown = await gql.ok("{ autoTopUp { threshold } }", token=person.token)
        assert shown["autoTopUp"] == {"threshold": 6}
    finally:
        await gql.aclose()
        await worker.stop()
        await api.stop()
