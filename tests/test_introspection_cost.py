"""What introspection may cost (attack on issue 13's gate): it is answered from
the schema, open to anonymous callers, and aliases copy its tree, so 30 copies
of `__schema { types { fields { … } } }` took 1.5 s of CPU per anonymous
request and four such clients held /health at 10 s. Introspection fields take
no aliases, an operation may resolve MAX_INTROSPECTION_FIELDS of them, and an
anonymous request is charged against its address's limit for the fields it
resolved."""

from __future__ import annotations

import uuid

import pytest
from graphql import get_introspection_query

from tests.conftest import TEST_ENV
from tests.harness import ApiServer, GraphQLClient
from tests.test_abuse_edge import _fresh_minute, fresh_address

FULL = get_introspection_query(
    descriptions=True,
    specified_by_url=True,
    directive_is_repeatable=True,
    schema_description=True,
    input_value_deprecation=True,
)
COPY = "__schema { types { fields { name description type { name kind ofType { name } } } } }"
COPIES = "{ " + " ".join(f"c{i}: {COPY}" for i in range(30)) + " }"

# One tree, no alias, as large as the introspection depth rule allows: about
# 15,000 fields for this schema.
T = (
    "name kind description specifiedByURL isOneOf ofType { name kind description "
    "ofType { name kind description ofType { name kind description } } }"
)
ARGS = f"args {{ name description defaultValue isDeprecated deprecationReason type {{ {T} }} }}"
F = f"name description isDeprecated deprecationReason {ARGS} type {{ {T} }}"
WIDEST = (
    f"{{ __schema {{ directives {{ name description isRepeatable locations {ARGS} }} types {{ {T} "
    f"fields {{ {F} type {{ {T} fields {{ {F} }} interfaces {{ {T} }} possibleTypes {{ {T} }} "
    f"inputFields {{ name type {{ {T} }} }} enumValues {{ name description }} }} }} "
    f"inputFields {{ name description defaultValue type {{ {T} "
    f"inputFields {{ name description defaultValue type {{ {T} }} }} }} }} "
    "enumValues(includeDeprecated: true) { name description isDeprecated deprecationReason } "
    f"interfaces {{ {T} fields {{ {F} }} }} possibleTypes {{ {T} fields {{ {F} }} }} }} }} }}"
)


async def test_copies_of_the_schema_are_refused_before_they_run(gql, user):
    for token in (None, user.token):
        body = await gql.execute(f"# {uuid.uuid4()}\n{COPIES}", token=token)
        assert body["data"] is None
        [error] = body["errors"]
        assert error["extensions"]["code"] == "QUERY_TOO_COMPLEX"
        assert "aliased" in error["message"]
    one = await gql.error('{ q: __type(name: "Query") { name } }')
    assert one["extensions"]["code"] == "QUERY_TOO_COMPLEX"
    inner = await gql.error("{ __schema { types { n: name } } }")
    assert inner["extensions"]["code"] == "QUERY_TOO_COMPLEX"
    # __typename is a leaf like any other; what GraphiQL, Apollo's tooling and
    # codegen send still answers in full.
    assert await gql.ok("{ t: __typename }") == {"t": "Query"}
    data = await gql.ok(FULL)
    types = {t["name"]: t for t in data["__schema"]["types"]}
    assert {"Query", "Mutation", "Subscription", "GraphInput"} <= set(types)
    assert len(types["Mutation"]["fields"]) > 40


@pytest.fixture(scope="module")
async def counted(database):
    env = {
        "REDIS_PREFIX": f"{TEST_ENV['REDIS_PREFIX']}introspection-{uuid.uuid4().hex[:8]}:",
        "ANONYMOUS_RATE_LIMIT_PER_MINUTE": "5",
        "CLIENT_IP_HEADER": "X-Real-IP",
        # Above GraphiQL's ~8,000, below WIDEST's ~15,000.
        "MAX_INTROSPECTION_FIELDS": "12000",
    }
    async with ApiServer(TEST_ENV, env) as server:
        client = GraphQLClient(server.base_url)
        try:
            yield client
        finally:
            await client.aclose()


async def test_introspection_past_max_introspection_fields_is_one_error(counted, new_user):
    person = new_user()
    body = await counted.execute(WIDEST, token=person.token)
    assert body["data"] is None
    [error] = body["errors"]
    assert error["extensions"]["code"] == "QUERY_TOO_COMPLEX"
    assert "12000" in error["message"]


async def test_anonymous_introspection_counts_by_the_fields_it_resolves(counted, new_user):
    await _fresh_minute()
    address = {"X-Real-IP": fresh_address()}
    # GraphiQL's introspection (about 8,000 fields) answers, and counts as more
    # than the five requests this address may make in a minute...
    assert (await counted.ok(FULL, headers=address))["__schema"]["types"]
    refused = await counted.post("{ __typename }", headers=address)
    assert refused.status_code == 429
    assert refused.json()["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
    # ... while other addresses, and signed-in callers at this one, go on.
    assert await counted.ok("{ __typename }", headers={"X-Real-IP": "203.0.113.9"})
    person = new_user()
    for _ in range(3):
        assert await counted.ok(FULL, token=person.token, headers=address)
