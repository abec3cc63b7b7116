"""The API's edge under abuse (issue 13), on real API processes: hostile
documents refused before they cost anything, the worst-case result size,
the response size cap, operations that must be named, the mutation rate
limit through fragments, the anonymous rate limit, /metrics behind a token,
schema hints with the explorer off, and stopExecution without
READ_EXECUTION."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import time
import uuid

import httpx
import pytest
import websockets

from tests.conftest import TEST_ENV
from tests.execution_helpers import execute, wait_for_end
from tests.graph_builders import create_graph, echo_graph, node
from tests.harness import ApiServer, GraphQLClient, graphql_ws

METRICS_TOKEN = "metrics-" + uuid.uuid4().hex
STRICT_ENV = {
    # Its own queue (no worker listens), buckets and counters.
    "REDIS_PREFIX": f"{TEST_ENV['REDIS_PREFIX']}strict-{uuid.uuid4().hex[:8]}:",
    "ANONYMOUS_RATE_LIMIT_PER_MINUTE": "3",
    "CLIENT_IP_HEADER": "X-Real-IP",
    "MUTATION_RATE_LIMIT_PER_MINUTE": "10",
    "MAX_RESPONSE_BYTES": "20000",
    "METRICS_TOKEN": METRICS_TOKEN,
    "GRAPHQL_EXPLORER": "false",
}


@pytest.fixture(scope="module")
async def strict(database):
    async with ApiServer(TEST_ENV, STRICT_ENV) as server:
        yield server


@pytest.fixture
async def strict_gql(strict):
    client = GraphQLClient(strict.base_url)
    try:
        yield client
    finally:
        await client.aclose()


def _address() -> dict[str, str]:
    """A client address of its own (the strict server trusts X-Real-IP)."""
    return {"X-Real-IP": fresh_address()}


def fresh_address() -> str:
    # 250 IPv4 documentation addresses let two tests of one minute share a limit
    # now and then; a random /64 of 2001:db8::/32 never does (IPv6 clients are
    # limited per /64).
    return str(ipaddress.IPv6Address((0x20010DB8 << 96) | (uuid.uuid4().int >> 64) << 32))


async def _codes(gql, query: str, **kw) -> list[str]:
    body = await gql.execute(query, **kw)
    return [error["extensions"]["code"] for error in body.get("errors", [])]


def _comment() -> str:
    # A fresh text every time, as an attacker sends it: no cache can help.
    return f"# {uuid.uuid4()}\n"


HOSTILE = {
    "4990 ids": "{ me { " + "id " * 4990 + "} }",
    "repeated root field": "{ " + "me { id } " * 1200 + "}",
    "inline fragments": "{ me { " + "... on User { id } " * 800 + "} }",
    "spread fragments": "{ me { ...A ...B } } fragment A on User { "
    + "id " * 11
    + "} fragment B on User { "
    + "id " * 11
    + "}",
    "distinct unknown fields": "{ me { " + " ".join(f"f{i}" for i in range(2000)) + " } }",
    "fragments tripling per level": '{ __type(name: "Graph") { ...T0 } } '
    + " ".join(
        f"fragment T{i} on __Type {{ ofType {{ ...T{i + 1} }} interfaces {{ ...T{i + 1} }} "
        f"possibleTypes {{ ...T{i + 1} }} }}"
        for i in range(12)
    )
    + " fragment T12 on __Type { name }",
    "1200 variables": "query(" + " ".join(f"$v{i}: Int" for i in range(1200)) + ") { me { id } }",
    # Bulk that is not tokens: graphql-core reads it a character at a time
    # (0.1-0.23 s of CPU a megabyte, anonymously).
    "900 kB of comment": "#" + "x" * 900_000 + "\n{ __typename }",
    "900 kB of whitespace": " " * 900_000 + "{ __typename }",
    "a 900 kB name": "{ " + "a" * 900_000 + " }",
    "a 900 kB string": '{ __type(name: "' + "x" * 900_000 + '") { name } }',
    "700 operations": " ".join(f"query q{i} {{ __typename }}" for i in range(700)),
}


@pytest.mark.parametrize("document", list(HOSTILE.values()), ids=list(HOSTILE))
async def test_hostile_documents_are_refused_before_anything_else(gql, document):
    """Finding 1: each of these cost ~0.05-1.5 s of CPU before the sign-in
    check (graphql-core's overlapping-fields rule is quadratic); now they are
    refused from their text, signed in or not."""
    error = await gql.error(_comment() + document)
    assert error["extensions"]["code"] == "QUERY_TOO_COMPLEX", error


async def test_documents_at_the_limits_still_run(gql, user):
    # Up to 20 fields may share a response key (fragments each asking for `id`).
    data = await gql.ok("{ me { " + "id " * 20 + "} }", token=user.token)
    assert data["me"]["id"] == str(user.id)
    assert "QUERY_TOO_COMPLEX" in await _codes(gql, "{ me { " + "id " * 21 + "} }")
    # 50 fragments spread into one set: 50 spreads + 50 fields = 100 selections.
    fields = ("id", "email", "name", "timezone", "credits")
    fragments = " ".join(f"fragment F{i} on User {{ {fields[i % 5]} }}" for i in range(50))
    spreads = " ".join(f"...F{i}" for i in range(50))
    data = await gql.ok("{ me { " + spreads + " } } " + fragments, token=user.token)
    assert data["me"]["id"] == str(user.id)
    one_more = fragments + " fragment F50 on User { id }"
    error = await gql.error("{ me { " + spreads + " ...F50 } } " + one_more, token=user.token)
    assert error["extensions"]["code"] == "QUERY_TOO_COMPLEX"


async def test_long_texts_and_many_operations_below_the_limits_still_run(gql, user):
    query = '{ __type(name: "%s") { name } }' % ("x" * 99_000)
    assert await gql.ok(query, token=user.token) == {"__type": None}
    many = " ".join(f"query q{i} {{ __typename }}" for i in range(100))
    response = await gql.http.post(
        "/graphql",
        json={"query": many, "operationName": "q99"},
        headers={"Authorization": f"Bearer {user.token}"},
    )
    assert response.json() == {"data": {"__typename": "Query"}}


async def test_the_worst_case_result_size_is_refused(gql, new_user):
    person = new_user()
    many = " ".join(
        f"a{i}: graphs(first: 100) {{ edges {{ node {{ nodes {{ id }} }} }} }}" for i in range(30)
    )
    error = await gql.error("{ " + many + " }", token=person.token)
    assert error["extensions"]["code"] == "QUERY_TOO_COMPLEX"
    assert "objects" in error["message"]
    # A variable `first` counts as the largest page.
    error = await gql.error(
        "query($n: Int!) { " + many.replace("first: 100", "first: $n") + " }",
        {"n": 1},
        token=person.token,
    )
    assert error["extensions"]["code"] == "QUERY_TOO_COMPLEX"
    few = many.replace("first: 100", "first: 1")
    data = await gql.ok("{ " + few + " }", token=person.token)
    assert data["a0"] == {"edges": []}


async def test_a_response_past_max_response_bytes_is_one_error(strict_gql, new_user):
    """Finding 5: 2 KB of aliases answered 135 MB. Past MAX_RESPONSE_BYTES (20 kB
    here) the request fails with QUERY_TOO_COMPLEX and carries no data."""
    person = new_user()
    spec = echo_graph("big")
    spec["nodes"].append(node("note", "StoreValue", data="x" * 3000))
    await create_graph(strict_gql, person, spec)
    one = "graphs(first: 5) { edges { node { nodes { inputDefault } } } }"
    data = await strict_gql.ok("{ " + one + " }", token=person.token)
    assert len(data["graphs"]["edges"][0]["node"]["nodes"]) == 4
    body = await strict_gql.execute(
        "{ " + " ".join(f"a{i}: {one}" for i in range(10)) + " }", token=person.token
    )
    assert body["data"] is None
    assert [e["extensions"]["code"] for e in body["errors"]] == ["QUERY_TOO_COMPLEX"]
    assert "larger than 20000 bytes" in body["errors"][0]["message"]


SET_AND_READ = """mutation Set { updateTimezone(timezone: "Asia/Tokyo") { timezone } }
query Read { me { timezone } }"""


async def test_several_operations_need_an_operation_name(gql, user):
    """Finding 8: the first operation used to run."""
    error = await gql.error(SET_AND_READ, token=user.token)
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert "operation name" in error["message"]
    assert (await gql.ok("{ me { timezone } }", token=user.token))["me"]["timezone"] == "UTC"
    response = await gql.http.post(
        "/graphql",
        json={"query": SET_AND_READ, "operationName": "Set"},
        headers={"Authorization": f"Bearer {user.token}"},
    )
    assert response.json()["data"]["updateTimezone"]["timezone"] == "Asia/Tokyo"


def _set_zone(*names: str) -> str:
    return " ".join(f'{name}: updateTimezone(timezone: "Asia/Tokyo") {{ id }}' for name in names)


ELEVEN_BY_INLINE_FRAGMENT = (
    "mutation { ... on Mutation { " + _set_zone(*(f"a{i}" for i in range(11))) + " } }"
)
ELEVEN_BY_FRAGMENTS_AND_DIRECTIVES = f"""mutation($no: Boolean! = false) {{
  ...Eight
  {_set_zone("a")}
  b: updateTimezone(timezone: "Asia/Tokyo") @include(if: $no) {{ id }}
  ... @skip(if: $no) {{ {_set_zone("c")} }}
}}
fragment Eight on Mutation {{ {_set_zone(*(f"d{i}" for i in range(8)))} }}"""


@pytest.mark.parametrize(
    "document",
    [ELEVEN_BY_INLINE_FRAGMENT, ELEVEN_BY_FRAGMENTS_AND_DIRECTIVES],
    ids=["inline-fragment", "fragments-and-directives"],
)
async def test_every_root_mutation_field_counts_however_reached(strict_gql, new_user, document):
    """Finding 3: a fragment made thirty mutations count as one. The limit here
    is 10 a minute; eleven in one request are refused and change nothing."""
    person = new_user()
    error = await strict_gql.error(document, token=person.token)
    assert error["extensions"]["code"] == "RATE_LIMITED"
    me = await strict_gql.ok("{ me { timezone } }", token=person.token)
    assert me["me"]["timezone"] == "UTC"


async def _fresh_minute() -> None:
    # The limits count per clock minute: do not straddle its end.
    into = time.time() % 60
    if into > 50:
        await asyncio.sleep(60 - into + 0.1)


async def test_anonymous_requests_are_rate_limited_per_client_address(strict_gql, new_user):
    await _fresh_minute()
    address, other = _address(), {"X-Real-IP": "2001:db8:13::1"}
    for _ in range(3):
        assert await strict_gql.ok("{ __typename }", headers=address)
    refused = await strict_gql.post("{ __typename }", headers=address)
    assert refused.status_code == 429
    assert 0 < int(refused.headers["retry-after"]) <= 61
    error = refused.json()["errors"][0]
    assert error["extensions"]["code"] == "RATE_LIMITED"
    # Credentials that fail count as none.
    bad = await strict_gql.post("{ __typename }", token="not-a-token", headers=address)
    assert bad.status_code == 429
    # A signed-in caller at the same address is not limited.
    person = new_user()
    assert await strict_gql.ok("{ me { id } }", token=person.token, headers=address)
    # An IPv6 client counts by its /64: ::1 to ::3 spend ::4's budget.
    for host in (1, 2, 3):
        await strict_gql.ok("{ __typename }", headers={"X-Real-IP": f"2001:db8:13::{host}"})
    assert (await strict_gql.post("{ __typename }", headers=other)).status_code == 429
    # A websocket handshake without credentials is an anonymous request too.
    with pytest.raises(websockets.InvalidStatus):
        async with websockets.connect(
            strict_gql.http.base_url.copy_with(scheme="ws", path="/graphql").__str__(),
            subprotocols=["graphql-transport-ws"],
            additional_headers=address,
        ):
            pass


async def test_metrics_need_the_token_when_one_is_set(strict):
    async with httpx.AsyncClient(base_url=strict.base_url) as client:
        assert (await client.get("/metrics")).status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        assert (await client.get("/metrics", headers=wrong)).status_code == 401
        right = {"Authorization": f"Bearer {METRICS_TOKEN}"}
        response = await client.get("/metrics", headers=right)
    assert response.status_code == 200
    assert "agentgraph_http_request_seconds" in response.text


COMPLETE = "mutation($s: OnboardingStep!) { completeOnboardingStep(step: $s) { completedSteps } }"


async def test_no_schema_hints_with_the_explorer_off(gql, strict_gql, user):
    """Finding 8: "Did you mean …" spelled out the schema with GRAPHQL_EXPLORER=false."""
    typo = "{ me { emial } }"
    assert "Did you mean" in (await gql.error(typo, token=user.token))["message"]
    error = await strict_gql.error(typo, token=user.token)
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert "Did you mean" not in error["message"] and "email" not in error["message"]
    error = await strict_gql.error(COMPLETE, {"s": "WELCOM"}, token=user.token)
    assert "WELCOME" not in error["message"]
    introspection = await _codes(strict_gql, "{ __schema { types { name } } }", token=user.token)
    assert set(introspection) == {"BAD_USER_INPUT"}


STOP = "mutation($id: ID!) { stopExecution(id: $id) { id status %s } }"
KEY = """mutation($p: [ApiKeyPermission!]!) {
  createApiKey(input: {name: "stopper", permissions: $p}) { plainTextKey } }"""


async def test_stop_execution_shows_run_data_only_with_read_execution(strict_gql, new_user):
    """Finding 8: a key with EXECUTE_GRAPH alone read a run's inputs and outputs
    through stopExecution. Asking for them is FORBIDDEN and stops nothing."""
    person = new_user()
    graph = await create_graph(strict_gql, person)
    key = (await strict_gql.ok(KEY, {"p": ["EXECUTE_GRAPH"]}, token=person.token))["createApiKey"][
        "plainTextKey"
    ]
    started = await strict_gql.ok(
        'mutation($g: ID!) { executeGraph(graphId: $g, inputs: {text: "secret"}) { id } }',
        {"g": graph["id"]},
        api_key=key,
    )
    run_id = started["executeGraph"]["id"]
    for asked in (
        "inputs",
        "outputs",
        "... on Execution { nodeExecutions { id } }",
        "stats { cost }",
    ):
        error = await strict_gql.error(STOP % asked, {"id": run_id}, api_key=key)
        assert error["extensions"]["code"] == "FORBIDDEN", asked
    status = "query($id: ID!) { execution(id: $id) { status } }"
    queued = await strict_gql.ok(status, {"id": run_id}, token=person.token)
    assert queued["execution"]["status"] == "QUEUED"  # no worker serves this server
    stopped = await strict_gql.ok(STOP % "", {"id": run_id}, api_key=key)
    assert stopped["stopExecution"]["status"] == "TERMINATED"


def _cursor_parts(cursor: str) -> list:
    return json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))


async def test_graph_cursors_do_not_carry_row_ids(gql, new_user):
    """Finding 8: the cursor held the global integer row id, a count of every
    user's graphs."""
    person = new_user()
    first = await create_graph(gql, person, echo_graph("one"))
    second = await create_graph(gql, person, echo_graph("two"))
    page = "query($a: String) { graphs(first: 1, after: $a) { edges { cursor node { id } } } }"
    newest = (await gql.ok(page, token=person.token))["graphs"]["edges"][0]
    assert newest["node"]["id"] == second["id"]
    _, carried = _cursor_parts(newest["cursor"])
    assert carried == second["id"] and not str(carried).isdigit()
    after = await gql.ok(page, {"a": newest["cursor"]}, token=person.token)
    assert after["graphs"]["edges"][0]["node"]["id"] == first["id"]


async def test_is_one_of_of_wrapped_types_is_null_not_internal(api, gql):
    """`isOneOf` of a list or non-null type failed with INTERNAL once per field,
    each logged with its traceback: 9.5 s of CPU and 10 MB of log for one
    anonymous request aliasing it over every field of every type."""
    body = await gql.execute(
        '{ __type(name: "Query") { fields { type { kind isOneOf ofType { kind isOneOf } } } } }'
    )
    assert "errors" not in body, body["errors"][:1]
    types = [field["type"] for field in body["data"]["__type"]["fields"]]
    assert {t["isOneOf"] for t in types if t["kind"] in ("NON_NULL", "LIST")} == {None}
    graph_input = await gql.ok('{ __type(name: "GraphInput") { isOneOf } }')
    assert graph_input == {"__type": {"isOneOf": False}}
    assert "unexpected error" not in api.log()


async def test_the_client_address_is_the_last_one_the_proxy_header_carries(strict):
    """With CLIENT_IP_HEADER set, the first line of the header was read: a
    client that sent its own line (a proxy that adds a line rather than
    appending to it keeps it) chose its address, and so its own limit."""
    await _fresh_minute()
    proxied = fresh_address()
    async with httpx.AsyncClient(base_url=strict.base_url) as client:

        async def ask(forged: str) -> int:
            headers = [("X-Real-IP", forged), ("X-Real-IP", proxied)]
            body = {"query": "{ __typename }"}
            return (await client.post("/graphql", json=body, headers=headers)).status_code

        assert [await ask(f"10.9.0.{i}") for i in range(4)] == [200, 200, 200, 429]
        assert await ask(f"10.9.1.1, {proxied}") == 429


async def test_sockets_that_sign_in_do_not_spend_their_address_anonymous_limit(strict, new_user):
    """A browser cannot send credentials with a websocket handshake, so every
    socket of a signed-in web client counted as an anonymous request: behind
    one address (an office, a mobile carrier's NAT) the 61st socket of a
    minute was refused. A handshake is counted until its socket signs in."""
    await _fresh_minute()
    address = _address()
    person = new_user()
    url = strict.ws_url
    for _ in range(6):
        async with graphql_ws(
            url, {"Authorization": f"Bearer {person.token}"}, headers=address
        ) as ws:
            assert (await ws.request("{ me { id } }"))[0]["type"] == "next"
    # A socket that never signs in keeps counting.
    async with graphql_ws(url, {}, headers=address, expect_ack=False) as ws:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.receive()
        assert closed.value.rcvd.code == 4403
    async with httpx.AsyncClient(base_url=strict.base_url) as client:
        statuses = [
            (
                await client.post("/graphql", json={"query": "{ __typename }"}, headers=address)
            ).status_code
            for _ in range(3)
        ]
    assert statuses == [200, 200, 429]


async def test_a_page_of_runs_with_too_many_node_executions_is_refused_not_loaded(
    database, worker, new_user
):
    """`nodeExecutions` returns all of a run's node executions, so a page of
    large runs loaded them all (one run of 99,000 cost 5.8 s of CPU; the
    worst-case count takes 100 per run). What one batch loads is bounded by
    what one run may make (MAX_NODE_RUNS_PER_EXECUTION, 5 on this server)."""
    async with ApiServer(TEST_ENV, {"MAX_NODE_RUNS_PER_EXECUTION": "5"}) as server:
        client = GraphQLClient(server.base_url)
        try:
            person = new_user()
            graph = await create_graph(client, person, echo_graph())
            runs = [await execute(client, person, graph["id"], {"text": "x"}) for _ in range(2)]
            for run in runs:
                await wait_for_end(client, person, run["id"])
            page = "{ executions(first: %d) { edges { node { nodeExecutions { id } } } } }"
            body = await client.execute(page % 10, token=person.token)
            assert body["data"] is None
            assert {e["extensions"]["code"] for e in body["errors"]} == {"QUERY_TOO_COMPLEX"}
            one = await client.ok(page % 1, token=person.token)
            assert len(one["executions"]["edges"][0]["node"]["nodeExecutions"]) == 3
            single = "query($id: ID!) { execution(id: $id) { nodeExecutions { id } } }"
            data = await client.ok(single, {"id": runs[0]["id"]}, token=person.token)
            assert len(data["execution"]["nodeExecutions"]) == 3
        finally:
            await client.aclose()
