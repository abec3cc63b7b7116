"""The per-user `graphs` response cache (issue 14): a repeated request with
nothing changed is a hit; every write to the user's graphs is seen at once."""

from __future__ import annotations

import asyncio

import orjson

from tests.conftest import TEST_ENV
from tests.graph_builders import create_graph, echo_graph, link, node
from tests.harness import ApiServer, GraphQLClient
from tests.test_api_keys import create_key

GRAPHS = """query Mine { graphs(first: 10) { totalCount edges { node {
  id name version isActive settings { humanInTheLoopSafeMode }
  nodes { id blockId } links { id } } } } }"""


async def graphs_seen(gql, user, query: str = GRAPHS, **kw) -> tuple[dict, str | None]:
    response = await gql.post(query, token=user.token if not kw else None, **kw)
    body = response.json()
    assert "errors" not in body, body
    return body["data"]["graphs"], response.headers.get("x-graphs-cache")


async def cached_now(gql, user) -> dict:
    """The current answer, asked twice: the second time from the cache."""
    first, _ = await graphs_seen(gql, user)
    again, outcome = await graphs_seen(gql, user)
    assert outcome == "hit"
    assert again == first
    return again


async def test_a_repeated_request_is_a_hit_and_a_new_graph_is_seen_at_once(gql, user):
    await create_graph(gql, user, echo_graph("one"))
    first, outcome = await graphs_seen(gql, user)
    assert outcome == "miss"
    assert await cached_now(gql, user) == first
    await create_graph(gql, user, echo_graph("two"))
    after, outcome = await graphs_seen(gql, user)
    assert outcome == "miss"
    assert after["totalCount"] == first["totalCount"] + 1
    assert after["edges"][0]["node"]["name"] == "two"


async def test_a_hit_is_the_missed_body_compressed_as_the_client_takes_it(gql, user):
    """A hit is sent as stored: zstd-compressed when the client accepts zstd,
    else gzip-compressed when it accepts gzip, else plain JSON; the same bytes
    as the miss every way."""
    await create_graph(gql, user, echo_graph("zipped"))
    miss = await gql.post(GRAPHS, token=user.token, headers={"Accept-Encoding": "identity"})
    assert miss.headers["x-graphs-cache"] == "miss"
    for accept, encoding in (
        ("gzip, deflate", "gzip"),
        ("gzip, deflate, br, zstd", "zstd"),
        ("zstd;q=0, gzip", "gzip"),
        ("identity", None),
        ("gzip;q=0, deflate", None),
        ("br;q=1.0, *;q=0.5", "zstd"),
        ("*;q=0.5, zstd;q=0", "gzip"),
        ("zstd;q=x", None),
    ):
        hit = await gql.post(GRAPHS, token=user.token, headers={"Accept-Encoding": accept})
        assert hit.headers["x-graphs-cache"] == "hit"
        assert hit.headers.get("content-encoding") == encoding, accept
        assert "Accept-Encoding" in hit.headers["vary"]
        assert hit.content == miss.content  # httpx inflates what it was sent


async def test_update_delete_and_activate_are_seen_at_once(gql, user):
    graph = await create_graph(gql, user, echo_graph("before"))
    await cached_now(gql, user)

    renamed = {**echo_graph("after")}
    await gql.ok(
        "mutation($id: ID!, $g: GraphInput!) { updateGraph(id: $id, graph: $g) { version } }",
        {"id": graph["id"], "g": renamed},
        token=user.token,
    )
    seen, outcome = await graphs_seen(gql, user)
    mine = next(e["node"] for e in seen["edges"] if e["node"]["id"] == graph["id"])
    assert (outcome, mine["name"], mine["version"]) == ("miss", "after", 2)

    await cached_now(gql, user)
    await gql.ok(
        "mutation($id: ID!) { setActiveGraphVersion(id: $id, version: 1) { id } }",
        {"id": graph["id"]},
        token=user.token,
    )
    seen, outcome = await graphs_seen(gql, user)
    mine = next(e["node"] for e in seen["edges"] if e["node"]["id"] == graph["id"])
    assert (outcome, mine["name"], mine["version"]) == ("miss", "before", 1)

    await cached_now(gql, user)
    delete = "mutation($id: ID!) { deleteGraph(id: $id) }"
    await gql.ok(delete, {"id": graph["id"]}, token=user.token)
    seen, outcome = await graphs_seen(gql, user)
    assert outcome == "miss"
    assert graph["id"] not in [e["node"]["id"] for e in seen["edges"]]


async def test_graph_settings_are_seen_at_once(gql, user):
    graph = await create_graph(gql, user, echo_graph("settled"))
    before = await cached_now(gql, user)
    mine = next(e["node"] for e in before["edges"] if e["node"]["id"] == graph["id"])
    assert mine["settings"]["humanInTheLoopSafeMode"] is False
    await gql.ok(
        "mutation($id: ID!) { updateGraphSettings(id: $id, settings: "
        "{ humanInTheLoopSafeMode: true }) { humanInTheLoopSafeMode } }",
        {"id": graph["id"]},
        token=user.token,
    )
    seen, outcome = await graphs_seen(gql, user)
    mine = next(e["node"] for e in seen["edges"] if e["node"]["id"] == graph["id"])
    assert (outcome, mine["settings"]["humanInTheLoopSafeMode"]) == ("miss", True)


async def test_one_users_writes_leave_anothers_cache_and_never_share_it(gql, new_user):
    ada, bob = new_user(), new_user()
    await create_graph(gql, ada, echo_graph("ada's"))
    await create_graph(gql, bob, echo_graph("bob's"))
    adas = await cached_now(gql, ada)
    bobs, outcome = await graphs_seen(gql, bob)
    assert outcome == "miss"  # the same text, another user: never ada's entry
    assert [e["node"]["name"] for e in bobs["edges"]] == ["bob's"]
    await create_graph(gql, bob, echo_graph("bob's second"))
    again, outcome = await graphs_seen(gql, ada)
    assert (outcome, again) == ("hit", adas)


async def test_permissions_still_apply_to_a_cached_answer(gql, user):
    await create_graph(gql, user)
    await cached_now(gql, user)
    no_read = await create_key(gql, user, permissions=("EXECUTE_GRAPH",))
    response = await gql.post(GRAPHS, api_key=no_read["plainTextKey"])
    body = response.json()
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN", body
    assert response.headers.get("x-graphs-cache") is None
    assert await gql.error_code(GRAPHS, token="not-a-token") == "UNAUTHENTICATED"
    assert await gql.error_code(GRAPHS) == "UNAUTHENTICATED"
    reader = await create_key(gql, user, permissions=("READ_GRAPH",))
    response = await gql.post(GRAPHS, api_key=reader["plainTextKey"])
    assert response.headers.get("x-graphs-cache") == "hit"
    assert "errors" not in response.json()


async def test_volatile_fields_and_mixed_operations_are_never_cached(gql, user):
    await create_graph(gql, user)
    for query in (
        "{ graphs { edges { node { id trigger { __typename } } } } }",
        "query { graphs { edges { node { ...T } } } } "
        "fragment T on Graph { triggerDeliveries { __typename } }",
        "{ graphs { totalCount } me { credits } }",
    ):
        for _ in range(2):
            response = await gql.post(query, token=user.token)
            assert "errors" not in response.json(), response.json()
            assert response.headers.get("x-graphs-cache") is None, query


async def test_a_write_after_the_generation_lapsed_is_seen_at_once(gql, user, settings):
    """The user's generation key lapses some minutes after their last write;
    the next write must not bring back a generation whose entries still live
    (a counter starting again from nothing reached 1 again, and the answer
    cached under 1 before the lapse was served after that write)."""
    from redis.asyncio import Redis

    await create_graph(gql, user, echo_graph("first"))
    before = await cached_now(gql, user)
    redis = Redis.from_url(settings.REDIS_URL)
    try:
        pattern = f"{settings.REDIS_PREFIX}graphs-cache*gen:{user.id}"
        keys = [key async for key in redis.scan_iter(match=pattern)]
        assert len(keys) == 1, keys
        await redis.pexpire(keys[0], 1)  # lapses as its TTL would have it
        deadline = asyncio.get_running_loop().time() + 10
        while await redis.exists(keys[0]):
            assert asyncio.get_running_loop().time() < deadline, "the key did not lapse"
            await asyncio.sleep(0.01)
    finally:
        await redis.aclose()
    await create_graph(gql, user, echo_graph("second"))
    after, outcome = await graphs_seen(gql, user)
    assert outcome == "miss"
    assert after["totalCount"] == before["totalCount"] + 1


async def test_a_server_configured_otherwise_never_serves_anothers_answer(gql, user, api):
    """Which blocks are disabled follows the server's settings (LLMCall needs
    LLM_API_BASE): an API process configured otherwise, sharing the Redis
    prefix (a rolling deploy, a canary), must not be answered from entries
    that another configuration built."""
    spec = {
        "name": "asks a model",
        "description": "",
        "nodes": [node("in", "AgentInput", name="topic"), node("llm", "LLMCall")],
        "links": [link("in", "result", "llm", "prompt")],
    }
    query = "{ graphs { edges { node { nodes { block { name disabled } } } } } }"

    def disabled(body: dict) -> set:
        nodes = body["data"]["graphs"]["edges"][0]["node"]["nodes"]
        return {(n["block"]["name"], n["block"]["disabled"]) for n in nodes}

    configured = ApiServer(TEST_ENV, extra_env={"LLM_API_BASE": "http://127.0.0.1:9/v1"})
    await configured.start()
    other = GraphQLClient(configured.base_url)
    try:
        await create_graph(other, user, spec)
        for _ in range(2):
            body = (await other.post(query, token=user.token)).json()
            assert ("LLMCall", False) in disabled(body), body
    finally:
        await other.aclose()
        await configured.stop()
    body = (await gql.post(query, token=user.token)).json()
    assert ("LLMCall", True) in disabled(body), body


async def test_one_user_cannot_fill_redis_with_variants_of_a_query(database, new_user):
    """Each variant of the text (a comment) is another entry of up to
    MAX_RESPONSE_BYTES: past GRAPHS_CACHE_USER_BYTES a user's answers are not
    stored (but still right), until their next write starts a new budget."""
    server = ApiServer(TEST_ENV, extra_env={"GRAPHS_CACHE_USER_BYTES": "1500"})
    await server.start()
    client = GraphQLClient(server.base_url)
    try:
        ada = new_user()
        await create_graph(client, ada, echo_graph("ada's"))
        first, outcome = await graphs_seen(client, ada)  # the first entry
        assert outcome == "miss"
        size = len(orjson.dumps({"graphs": first}))
        assert 500 < size < 750  # two entries fit the budget, a third does not

        async def outcomes(variant: int) -> tuple[str | None, str | None]:
            query = f"# variant {variant}\n{GRAPHS}"
            seen = [await graphs_seen(client, ada, query) for _ in range(2)]
            assert seen[0][0] == seen[1][0]
            return seen[0][1], seen[1][1]

        assert [await outcomes(n) for n in range(3)] == [
            ("miss", "hit"),
            ("miss", "miss"),
            ("miss", "miss"),
        ]
        await create_graph(client, ada, echo_graph("ada's second"))
        assert await outcomes(5) == ("miss", "hit")
        bob = new_user()  # another user's budget is their own
        await create_graph(client, bob, echo_graph("bob's"))
        assert (await graphs_seen(client, bob))[1] == "miss"
        assert (await graphs_seen(client, bob))[1] == "hit"
    finally:
        await client.aclose()
        await server.stop()
