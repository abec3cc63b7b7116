"""Fuzzing the GraphQL contract with schemathesis against a real API process.

Schemathesis reads the live schema by introspection and generates documents
for every query and mutation: valid ones (positive mode) and ones the schema
must reject (negative mode). Each is sent as a signed-in user, and every answer
must be free of server faults: no 5xx, no INTERNAL error, and no Python
exception text in any message (SEMANTICS.md §2).

The run is bounded and deterministic, so CI sees the same documents each time:
a fixed number of examples per operation, derandomized, no example database.
Faults are collected rather than raised, so Hypothesis does not spend requests
shrinking them, and one report lists every operation that misbehaved together
with the document that did it and the server's traceback for its errorId.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, timedelta, timezone
from typing import Any

import graphql
import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.graphql import nodes

from tests.conftest import TEST_ENV
from tests.graph_builders import echo_graph
from tests.harness import ApiServer, GraphQLClient, TestUser

# Examples per operation, valid and invalid ones together: 47 operations x 40
# is under 1,900 requests, about 25 s on 2 cores (the budget is 90 s).
EXAMPLES_PER_OPERATION = 40

# A request that takes longer is a fault in itself (the API answers in ms).
ANSWER_TIMEOUT_SECONDS = 30

# executeBlock runs a block on a worker within a minute, so it only gets blocks that just compute:
# HttpRequest and LLMCall reach the network, Wait waits for minutes, SubGraph
# runs a whole graph and ReadFile reads blob storage.
UNBOUNDED_BLOCKS = {"HttpRequest", "LLMCall", "Wait", "SubGraph", "ReadFile"}

# Python exception text that must never reach a client.
LEAKED_EXCEPTION = re.compile(
    r"Traceback|\w+Error\(|\w+Exception\(|object has no attribute|NoneType|asyncpg|tortoise"
    r"|File \"|line \d+, in |is not JSON serializable|unexpected keyword argument"
    r"|positional argument|invalid literal for int|badly formed hexadecimal UUID",
    re.IGNORECASE,
)

FUZZ_SETTINGS = hypothesis.settings(
    max_examples=EXAMPLES_PER_OPERATION,
    derandomize=True,
    database=None,
    deadline=None,
    # Faults are recorded, never raised: nothing to shrink or explain.
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)


def _json_value(value: Any) -> Any:
    """A Python JSON value as a GraphQL literal node."""
    if value is None:
        return nodes.Null
    if isinstance(value, bool):
        return nodes.Boolean(value)
    if isinstance(value, int):
        return nodes.Int(value)
    if isinstance(value, float):
        if math.isinf(value):  # a literal too large for a double reads as infinity
            return graphql.FloatValueNode(value="1e999" if value > 0 else "-1e999")
        return nodes.Float(value)
    if isinstance(value, str):
        return nodes.String(value)
    if isinstance(value, list):
        return nodes.List([_json_value(item) for item in value])
    return nodes.Object(
        [
            graphql.ObjectFieldNode(name=graphql.NameNode(value=key), value=_json_value(item))
            for key, item in value.items()
        ]
    )


# Filled from the live server by the fuzz_target fixture: ids of the user's
# own objects (made anew before each operation, see _seed), of the blocks, of
# the blocks executeBlock may run, and the pin names and enum values of block
# inputs. Generated documents pick from them besides random values, so they
# reach past "not found" and "no such pin" into the operations themselves.
OWNED_IDS: list[str] = []
BLOCK_IDS: list[str] = []
BOUNDED_BLOCK_IDS: list[str] = []
BLOCK_WORDS: list[str] = []


def _one_of_list(values: list[str]) -> st.SearchStrategy[str]:
    return st.deferred(lambda: st.sampled_from(values))


# Text PostgreSQL and the JSON encoder cannot carry (NUL, lone surrogates):
# st.text() never draws surrogates, so they are listed.
_UNSTORABLE_TEXT = st.sampled_from(["a\x00b", "\ud800", "x\udfffy", "\udbff\udc00"])
_json_leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    # JSON numbers have no limit; these sit on the edges of what code handles.
    | st.sampled_from([2**31, 2**53 + 1, 2**63, 2**64, -(2**63) - 1, 10**400])
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | _UNSTORABLE_TEXT
    | _one_of_list(BLOCK_WORDS)
)
_json_keys = st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_]{0,11}\Z") | _one_of_list(BLOCK_WORDS)
_json_values = st.recursive(
    _json_leaves,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_json_keys, inner, max_size=3),
    max_leaves=8,
)
# JSON arguments are objects in the contract (inputs, credentials, metadata);
# other shapes are sent too, since a client may send anything there.
JSON_SCALAR = (st.dictionaries(_json_keys, _json_values, max_size=4) | _json_values).map(
    _json_value
)
ID_SCALAR = st.one_of(
    st.text(max_size=40).map(nodes.String),
    st.integers(min_value=-(2**31), max_value=2**31 - 1).map(nodes.Int),
    st.uuids().map(nodes.String),
    # Listed twice: owned objects are where most code paths are.
    _one_of_list(OWNED_IDS).map(nodes.String),
    _one_of_list(OWNED_IDS).map(nodes.String),
    _one_of_list(BLOCK_IDS).map(nodes.String),
)
# Per operation, where the general ids would do harm.
ID_SCALAR_FOR = {"Mutation.executeBlock": _one_of_list(BOUNDED_BLOCK_IDS).map(nodes.String)}

# DateTime arguments (creditHistory's `before`): ISO 8601 text with and without
# an offset, at the ends of what datetime holds, and things that are not dates.
_OFFSETS = st.sampled_from(
    [None, UTC, timezone(timedelta(hours=14)), timezone(-timedelta(hours=12, minutes=59))]
)
DATETIME_SCALAR = st.one_of(
    st.datetimes(timezones=_OFFSETS).map(lambda moment: nodes.String(moment.isoformat())),
    st.sampled_from(
        [
            "0001-01-01T00:00:00",
            "9999-12-31T23:59:59.999999-23:59",
            "2026-02-30T00:00:00Z",
            "2026-06-01",
            "24:00",
            "",
            "now",
            "1e999",
        ]
    ).map(nodes.String),
    st.text(max_size=30).map(nodes.String),
    st.integers().map(nodes.Int),
    st.floats(allow_nan=False).map(nodes.Float),
)

schemathesis.graphql.scalar("JSON", JSON_SCALAR)
schemathesis.graphql.scalar("DateTime", DATETIME_SCALAR)


def _words_in(schema: Any) -> set[str]:
    """Property names and string enum values anywhere in a JSON Schema."""
    words: set[str] = set()
    if isinstance(schema, dict):
        words.update(schema.get("properties") or {})
        words.update(v for v in schema.get("enum") or () if isinstance(v, str))
        for value in schema.values():
            words |= _words_in(value)
    elif isinstance(schema, list):
        for value in schema:
            words |= _words_in(value)
    return words


@dataclass
class Fault:
    operation: str
    problem: str
    document: str
    detail: str = ""


@dataclass
class FuzzTarget:
    server: ApiServer
    user: TestUser
    faults: list[Fault] = field(default_factory=list)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.user.token}"}


@pytest.fixture(scope="module")
async def fuzz_target(database, settings, worker) -> AsyncIterator[FuzzTarget]:
    """A dedicated API process, with the mutation rate limit out of the way,
    and a throwaway user for it."""
    server = ApiServer(TEST_ENV, {"MUTATION_RATE_LIMIT_PER_MINUTE": "100000"})
    await server.start()
    client = GraphQLClient(server.base_url)
    try:
        user = TestUser.fresh(settings)
        blocks = (await client.ok("{ blocks { id name inputSchema } }", token=user.token))["blocks"]
        BLOCK_IDS[:] = [block["id"] for block in blocks]
        BOUNDED_BLOCK_IDS[:] = [b["id"] for b in blocks if b["name"] not in UNBOUNDED_BLOCKS]
        BLOCK_WORDS[:] = sorted(set().union(*(_words_in(b["inputSchema"]) for b in blocks)))
        yield FuzzTarget(server, user)
        # Leave no schedule behind to fire for the rest of the session.
        schedules = await client.ok("{ schedules { id } }", token=user.token)
        for schedule in schedules["schedules"]:
            await client.ok(DELETE_SCHEDULE, {"id": schedule["id"]}, token=user.token)
    finally:
        await client.aclose()
        await server.stop()


@pytest.fixture(scope="module")
def live_schema(fuzz_target: FuzzTarget):
    """The schema as the running server reports it by introspection."""
    return schemathesis.graphql.from_url(
        fuzz_target.server.base_url + "/graphql", headers=fuzz_target.headers, timeout=30
    )


SEED_GRAPH_AND_KEY = """mutation($graph: GraphInput!, $key: ApiKeyInput!) {
  createGraph(graph: $graph) { id nodes { id } }
  createApiKey(input: $key) { apiKey { id } } }"""
SEED_RUN_AND_SCHEDULE = """mutation($graphId: ID!, $schedule: ScheduleInput!) {
  executeGraph(graphId: $graphId, inputs: {text: "hi"}) { id }
  createSchedule(input: $schedule) { id } }"""
SEED_TRANSACTIONS = "{ creditHistory(first: 5) { transactions { key } } }"
DELETE_SCHEDULE = "mutation($id: ID!) { deleteSchedule(id: $id) }"


def _ok(target: FuzzTarget, session: requests.Session, query: str, variables=None) -> dict:
    response = session.post(
        target.server.base_url + "/graphql",
        json={"query": query, "variables": variables or {}},
        headers=target.headers,
        timeout=30,
    )
    body = response.json()
    assert not body.get("errors"), body["errors"]
    return body["data"]


def _seed(target: FuzzTarget, session: requests.Session) -> list[str]:
    """Fresh objects of every kind the user owns; returns their ids. Made anew
    before each operation, since a fuzzed mutation may delete or revoke them."""
    made = _ok(
        target,
        session,
        SEED_GRAPH_AND_KEY,
        {
            "graph": echo_graph("fuzz seed"),
            "key": {"name": "fuzz seed", "permissions": ["READ_GRAPH"]},
        },
    )
    graph = made["createGraph"]
    used = _ok(
        target,
        session,
        SEED_RUN_AND_SCHEDULE,
        {
            "graphId": graph["id"],
            "schedule": {
                "graphId": graph["id"],
                "name": "fuzz seed",
                "cron": "0 3 * * *",
                "inputs": {"text": "hi"},
            },
        },
    )
    history = _ok(target, session, SEED_TRANSACTIONS)
    return [
        graph["id"],
        *(n["id"] for n in graph["nodes"]),
        made["createApiKey"]["apiKey"]["id"],
        used["executeGraph"]["id"],
        used["createSchedule"]["id"],
        *(t["key"] for t in history["creditHistory"]["transactions"]),
    ]


def _operations(schema, root: str) -> Iterator[Any]:
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.label.startswith(root + "."):
            yield operation


def _error_trace(server: ApiServer, error_id: str) -> str:
    """The server's traceback for one masked error (its log line carries the errorId)."""
    for line in server.log().splitlines():
        if error_id in line:
            try:
                return json.loads(line).get("exc_info") or line
            except ValueError:
                return line
    return "(no log line carries this errorId)"


def _faults_in(target: FuzzTarget, label: str, document: str, response) -> Iterator[Fault]:
    if response.status_code >= 500:
        yield Fault(label, f"HTTP {response.status_code}", document, response.text[:2000])
        return
    try:
        body = response.json()
    except ValueError:
        yield Fault(label, "answer is not JSON", document, response.text[:2000])
        return
    for error in body.get("errors") or []:
        extensions = error.get("extensions") or {}
        message = str(error.get("message", ""))
        if extensions.get("code") == "INTERNAL":
            trace = _error_trace(target.server, str(extensions.get("errorId")))
            yield Fault(label, "INTERNAL error", document, trace)
        elif LEAKED_EXCEPTION.search(message):
            yield Fault(label, "exception text in a message", document, message)
        elif "code" not in extensions:
            yield Fault(label, "error without extensions.code", document, message)


def _fuzz(target: FuzzTarget, operation, session: requests.Session) -> None:
    # Scalar strategies are looked up when a case is drawn, so this holds for
    # this operation's cases only.
    schemathesis.graphql.scalar("ID", ID_SCALAR_FOR.get(operation.label, ID_SCALAR))
    strategy = operation.as_strategy(GenerationMode.POSITIVE) | operation.as_strategy(
        GenerationMode.NEGATIVE
    )

    @FUZZ_SETTINGS
    @hypothesis.given(case=strategy)
    def send(case) -> None:
        try:
            response = case.call(
                base_url=target.server.base_url,
                session=session,
                headers=target.headers,
                timeout=ANSWER_TIMEOUT_SECONDS,
            )
        except requests.RequestException as exc:
            target.faults.append(Fault(operation.label, "no answer", str(case.body), repr(exc)))
            return
        target.faults.extend(_faults_in(target, operation.label, str(case.body), response))

    send()


def _report(faults: list[Fault]) -> str:
    first_of_each: dict[tuple[str, str], Fault] = {}
    for fault in faults:
        first_of_each.setdefault((fault.operation, fault.problem), fault)
    return f"{len(faults)} faulty answers; the first of each kind:\n\n" + "\n\n".join(
        f"{f.operation}: {f.problem}\n--- document\n{f.document}\n--- detail\n{f.detail}"
        for f in first_of_each.values()
    )


# Subscriptions are not fuzzed: schemathesis generates queries and mutations.
@pytest.mark.parametrize("root", ["Query", "Mutation"])
def test_fuzzed_operations_answer_without_server_faults(root, fuzz_target, live_schema):
    fuzz_target.faults.clear()
    operations = list(_operations(live_schema, root))
    assert operations, f"the live schema has no {root} operations"
    with requests.Session() as session:
        for operation in operations:
            OWNED_IDS[:] = _seed(fuzz_target, session)
            _fuzz(fuzz_target, operation, session)
    if fuzz_target.faults:
        pytest.fail(_report(fuzz_target.faults), pytrace=False)
