"""A real browser (Debian's Chromium, driven by playwright) against a real
server (issue 11): GraphiQL as the product serves it runs a query and watches
a run live exactly as the README says, touching nothing but the server; a page
on an allowed origin can query and subscribe, a page on another origin cannot.

playwright cannot download browsers here, so it drives /usr/bin/chromium
(`apt-get install -y chromium`; .ci/run installs it). Without it these tests
are skipped with a loud reason, or fail under CI (AGENTGRAPH_REQUIRE_BROWSER=1).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import threading
import warnings
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import TEST_ENV
from tests.execution_helpers import OwnStack
from tests.graph_builders import block_id, create_graph, echo_graph
from tests.harness import ROOT, ApiServer, GraphQLClient, free_port

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
REQUIRED = os.environ.get("AGENTGRAPH_REQUIRE_BROWSER") == "1"


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator:
    if not CHROMIUM.exists():  # noqa: ASYNC240 - one stat, before anything runs
        reason = (
            f"BROWSER TESTS DID NOT RUN: no Chromium at {CHROMIUM}; "
            "install it with `apt-get install -y chromium`"
        )
        if REQUIRED:
            pytest.fail(reason + " (AGENTGRAPH_REQUIRE_BROWSER=1 requires it)")
        warnings.warn(reason, stacklevel=1)
        pytest.skip(reason)
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS
        )
        try:
            yield launched
        finally:
            await launched.close()


def readme_operation(name: str) -> str:
    blocks = re.findall(r"```graphql\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    [found] = [b for b in blocks if re.search(rf"\b(query|mutation|subscription) {name}\b", b)]
    return found


class GraphiQLPage:
    """GraphiQL's editors and buttons, as a person uses them."""

    EDITORS = {
        "query": ".graphiql-query-editor .CodeMirror",
        "variables": ".graphiql-editor-tool .CodeMirror >> nth=0",
        "headers": ".graphiql-editor-tool .CodeMirror >> nth=1",
        "response": ".graphiql-response .CodeMirror",
    }

    def __init__(self, page) -> None:
        self.page = page

    async def fill(self, editor: str, text: str) -> None:
        handle = await self.page.locator(self.EDITORS[editor]).element_handle()
        await handle.evaluate("(el, text) => el.CodeMirror.setValue(text)", text)

    async def response(self) -> str:
        handle = await self.page.locator(self.EDITORS["response"]).element_handle()
        return await handle.evaluate("el => el.CodeMirror.getValue()")

    async def run(self, query: str, variables: dict, headers: dict) -> None:
        await self.fill("query", query)
        await self.fill("variables", json.dumps(variables))
        await self.fill("headers", json.dumps(headers))
        # GraphiQL takes in an edit a moment later (it sends the operation name
        # it parsed then); wait until its saved tab state shows this one.
        [name] = re.findall(r"\b(?:query|mutation|subscription) (\w+)", query)
        await self.page.wait_for_function(
            """([name, variables]) => {
                const state = JSON.parse(localStorage.getItem("graphiql:tabState") || "null");
                const tab = state && state.tabs[state.activeTabIndex];
                return tab && tab.operationName === name && tab.variables === variables;
            }""",
            arg=[name, json.dumps(variables)],
        )
        await self.page.get_by_label("Execute query (Ctrl-Enter)").click()

    async def wait_for_response(self, predicate, timeout: float = 60.0) -> dict:
        """The response pane's JSON once `predicate` holds for it."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            text = await self.response()
            try:
                shown = json.loads(text)
            except ValueError:
                shown = None
            if shown is not None and predicate(shown):
                return shown
            assert asyncio.get_running_loop().time() < deadline, f"GraphiQL shows: {text}"
            await asyncio.sleep(0.05)


@pytest.fixture(scope="module")
async def quiet_stack(database) -> AsyncIterator[OwnStack]:
    """An API whose queue no worker serves until a test starts one."""
    stack = OwnStack(TEST_ENV, "browser")
    await stack.start()
    try:
        yield stack
    finally:
        await stack.stop()


async def test_graphiql_runs_a_query_and_watches_a_run_live(browser, quiet_stack, new_user):
    stack, person = quiet_stack, new_user()
    headers = {"Authorization": f"Bearer {person.token}"}
    saved = await stack.gql.ok(
        readme_operation("Save"),
        {
            "in": block_id("AgentInput"),
            "store": block_id("StoreValue"),
            "out": block_id("AgentOutput"),
        },
        token=person.token,
    )
    graph_id = saved["createGraph"]["id"]

    context = await browser.new_context()
    page = await context.new_page()
    requested: list[str] = []
    frames: list[str | bytes] = []
    page.on("request", lambda request: requested.append(request.url))

    def watch_socket(socket) -> None:
        requested.append(socket.url)
        socket.on("framereceived", lambda payload: frames.append(payload))

    page.on("websocket", watch_socket)
    try:
        await page.goto(stack.api.base_url + "/graphql")
        graphiql = GraphiQLPage(page)
        await page.wait_for_selector(GraphiQLPage.EDITORS["query"])

        # The README's first query, with the token in the Headers tab.
        await graphiql.run(readme_operation("Me"), {}, headers)
        me = await graphiql.wait_for_response(lambda r: "data" in r or "errors" in r)
        assert me["data"]["me"]["id"] == str(person.id), me

        # Start the run: no worker serves this queue yet, so it stays QUEUED.
        await graphiql.run(readme_operation("Run"), {"graph": graph_id}, headers)
        run = await graphiql.wait_for_response(lambda r: "executeGraph" in (r.get("data") or {}))
        execution_id = run["data"]["executeGraph"]["id"]
        assert run["data"]["executeGraph"]["status"] == "QUEUED"

        # Watch it in a second tab.
        await page.get_by_label("Add tab").click()
        await graphiql.run(readme_operation("Watch"), {"id": execution_id}, headers)
        snapshot = await graphiql.wait_for_response(
            lambda r: "executionEvents" in (r.get("data") or {})
        )
        assert snapshot["data"]["executionEvents"]["execution"]["status"] == "QUEUED"

        # Only now does a worker take the run: everything after is live.
        worker = stack.worker()
        await worker.start()
        try:
            final = await graphiql.wait_for_response(
                lambda r: (
                    (r.get("data") or {})
                    .get("executionEvents", {})
                    .get("execution", {})
                    .get("status")
                    == "COMPLETED"
                )
            )
        finally:
            await worker.stop()
        assert final["data"]["executionEvents"]["execution"]["outputs"] == {"result": ["hello"]}
    finally:
        await context.close()

    # Every frame was text, and the run's events arrived in strictly rising seq.
    assert frames and all(isinstance(f, str) for f in frames), [type(f) for f in frames]
    messages = [json.loads(f) for f in frames]
    events = [
        m["payload"]["data"]["executionEvents"]
        for m in messages
        if m["type"] == "next" and "executionEvents" in (m["payload"].get("data") or {})
    ]
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs
    assert events[0]["execution"]["status"] == "QUEUED"
    assert [e["execution"]["status"] for e in events if e["__typename"] == "ExecutionStatusEvent"][
        -2:
    ] == ["RUNNING", "COMPLETED"]
    assert any(m["type"] == "complete" for m in messages)
    # Nothing the page loaded or opened came from anywhere but this server.
    server = stack.api.base_url.removeprefix("http://")
    assert requested
    off_server = [u for u in requested if not re.match(rf"(https?|wss?)://{re.escape(server)}/", u)]
    assert off_server == []


PAGE = """<!doctype html><meta charset="utf-8"><title>a web app</title>
<script>
async function useTheApi(api, ws, token, executionId) {
  const auth = {Authorization: "Bearer " + token};
  const result = {};
  try {
    const response = await fetch(api + "/graphql", {
      method: "POST",
      headers: {...auth, "Content-Type": "application/json"},
      body: JSON.stringify({query: "{ me { id } }"}),
    });
    result.query = await response.json();
    result.requestId = response.headers.get("X-Request-Id");
  } catch (error) {
    result.query = "blocked: " + error;
  }
  const watch = {
    query: `subscription($id: ID!) { executionEvents(executionId: $id, afterSeq: 0) {
      ... on ExecutionStatusEvent { seq execution { status } }
      ... on NodeExecutionEvent { seq } } }`,
    variables: {id: executionId},
  };
  try {
    const response = await fetch(api + "/graphql", {
      method: "POST",
      headers: {...auth, "Content-Type": "application/json",
                Accept: "multipart/mixed;boundary=graphql;subscriptionSpec=1.0,application/json"},
      body: JSON.stringify(watch),
    });
    result.multipart = await response.text();
  } catch (error) {
    result.multipart = "blocked: " + error;
  }
  result.websocket = await new Promise((resolve) => {
    const events = [];
    const socket = new WebSocket(ws, "graphql-transport-ws");
    socket.onopen = () => socket.send(JSON.stringify({type: "connection_init", payload: auth}));
    socket.onmessage = (message) => {
      const data = JSON.parse(message.data);
      if (data.type === "connection_ack") {
        socket.send(JSON.stringify({id: "1", type: "subscribe", payload: watch}));
      } else if (data.type === "next") {
        events.push(data.payload.data.executionEvents);
      } else if (data.type === "complete") {
        socket.close();
        resolve(events);
      }
    };
    socket.onclose = (event) => resolve(events.length ? events : "closed " + event.code);
  });
  return result;
}
</script>"""


@contextmanager
def static_page(html: str) -> Iterator[str]:
    """Serves `html` at / on its own port: its own origin."""

    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = html.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


async def test_a_page_on_the_frontend_origin_can_use_the_api_and_others_cannot(
    browser, database, new_user, worker
):
    with static_page(PAGE) as frontend, static_page(PAGE) as elsewhere:
        # The default ALLOWED_ORIGINS: FRONTEND_BASE_URL's origin.
        api = ApiServer(TEST_ENV, {"FRONTEND_BASE_URL": frontend + "/app"})
        await api.start()
        client = GraphQLClient(api.base_url)
        person = new_user()
        try:
            graph = await create_graph(client, person, echo_graph())
            run = await client.ok(
                'mutation($g: ID!) { executeGraph(graphId: $g, inputs: {text: "hi"}) { id } }',
                {"g": graph["id"]},
                token=person.token,
            )
            execution_id = run["executeGraph"]["id"]
            await wait_for_end(client, person, execution_id)
            results = {}
            for origin in (frontend, elsewhere):
                page = await browser.new_page()
                try:
                    await page.goto(origin + "/")
                    results[origin] = await page.evaluate(
                        "([api, ws, token, id]) => useTheApi(api, ws, token, id)",
                        [api.base_url, api.ws_url, person.token, execution_id],
                    )
                finally:
                    await page.close()
        finally:
            await client.aclose()
            await api.stop()

    allowed = results[frontend]
    assert allowed["query"] == {"data": {"me": {"id": str(person.id)}}}
    assert allowed["requestId"]  # exposed to the page
    assert '"status":"COMPLETED"' in allowed["multipart"]
    assert allowed["multipart"].rstrip().endswith("--graphql--")
    statuses = [e["execution"]["status"] for e in allowed["websocket"] if "execution" in e]
    assert statuses[0] == "QUEUED" and statuses[-1] == "COMPLETED"

    refused = results[elsewhere]
    assert refused["query"].startswith("blocked: TypeError")
    assert refused["multipart"].startswith("blocked: TypeError")
    assert refused["websocket"] == "closed 1006"  # the handshake was refused


async def wait_for_end(client, person, execution_id) -> None:
    from tests.execution_helpers import wait_for_end as wait

    await wait(client, person, execution_id)
