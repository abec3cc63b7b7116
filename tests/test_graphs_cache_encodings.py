"""Attack on compressed cached `graphs` answers (9ff7888): Accept-Encoding
parsing, every hit inflating to the miss's exact body, writes seen at once
whatever the encoding, no answer shared across users or permissions, no
error cached."""

from __future__ import annotations

import asyncio
import gzip

import pytest
import zstandard

from tests.graph_builders import create_graph, echo_graph
from tests.test_api_keys import create_key

GRAPHS = "query Mine { graphs(first: 10) { totalCount edges { node { id name version } } } }"


async def raw(gql, query: str = GRAPHS, variables=None, headers=None, method: str = "POST"):
    """(status, headers, the body as sent, before any inflating)."""
    kw = {"headers": headers or {}}
    if method == "POST":
        kw["json"] = {"query": query, "variables": variables or {}}
    else:
        kw["params"] = {"query": query}
    async with gql.http.stream(method, "/graphql", **kw) as response:
        body = b"".join([chunk async for chunk in response.aiter_raw()])
        return response.status_code, response.headers, body


def inflated(headers, body: bytes) -> bytes:
    encoding = headers.get("content-encoding")
    if encoding == "zstd":
        return zstandard.ZstdDecompressor().decompress(body)
    if encoding == "gzip":
        return gzip.decompress(body)
    assert encoding is None, encoding
    return body


def bearer(person, accept: str | None = None) -> dict:
    headers = {"Authorization": f"Bearer {person.token}"}
    if accept is not None:
        headers["Accept-Encoding"] = accept
    return headers


# (Accept-Encoding, the encodings a client saying so can read)
ODD_HEADERS = [
    ("ZSTD", {"zstd"}),
    ("GZip", {"gzip"}),
    ("gzip \t ;\tq=1", {"gzip"}),
    ("zstd\t,\tgzip", {"zstd", "gzip"}),
    ("gzip;q=0.5 , zstd;q=0.001", {"zstd", "gzip"}),
    ("*", {"zstd", "gzip"}),
    ("*;q=0", {None}),
    ("*;q=0, identity", {None}),
    ("identity;q=0", {None, "zstd", "gzip"}),  # nothing acceptable: anything goes
    ("", {None}),
    (",,,", {None}),
    (";;;", {None}),
    ("zstd;Q=0, gzip", {"gzip"}),
    ("zstd; q=0, gzip", {"gzip"}),
    ("zstd;q=0.000, gzip", {"gzip"}),
    ("zstd;q=-1, gzip", {"gzip"}),
    ("zstd;q=nan, gzip", {"gzip"}),
    ("zstd;q=1e-400, gzip", {"gzip"}),
    ("zstd;q=0, zstd", {None}),
    ("gzip;q=0.5, *;q=0", {"gzip"}),
    ("*, zstd;q=0", {"gzip"}),
    ("*;q=0, zstd;q=0.1", {"zstd"}),
    ("deflate, br", {None}),
    ("x-gzip", {None, "gzip"}),
    (b"\xe9zstd, \xc5\xbftd", {None}),
    ("gzip;q=0.5;level=9", {None, "gzip"}),
    ("foo;q=0.5, " * 700 + "zstd", {"zstd"}),
    ("gzip;q=" + "0" * 3000 + "1", {"gzip"}),
]


@pytest.mark.parametrize("method", ["POST", "GET"])
async def test_every_hit_inflates_to_the_miss_body(gql, user, method):
    await create_graph(gql, user, echo_graph("odd headers"))
    status, headers, miss = await raw(gql, headers=bearer(user, "identity"), method=method)
    assert status == 200 and headers["x-graphs-cache"] == "miss", miss
    assert b'"odd headers"' in miss
    for accept, readable in ODD_HEADERS:
        status, headers, body = await raw(gql, headers=bearer(user, accept), method=method)
        assert status == 200, (accept, body[:200])
        assert headers.get("x-graphs-cache") == "hit", accept[:60]
        assert headers.get("content-encoding") in readable, (accept[:60], headers)
        assert "accept-encoding" in headers.get("vary", "").lower()
        assert inflated(headers, body) == miss, accept[:60]
        assert int(headers["content-length"]) == len(body)


async def test_repeated_accept_encoding_lines_are_read_together(gql, user):
    await create_graph(gql, user)
    _, _, miss = await raw(gql, headers=bearer(user, "identity"))
    for lines, readable in (
        ([("accept-encoding", "identity"), ("accept-encoding", "zstd")], {None, "zstd"}),
        ([("accept-encoding", "zstd"), ("accept-encoding", "gzip;q=0")], {"zstd"}),
        ([("accept-encoding", "gzip;q=0"), ("accept-encoding", "zstd;q=0")], {None}),
    ):
        async with gql.http.stream(
            "POST",
            "/graphql",
            json={"query": GRAPHS, "variables": {}},
            headers=[("authorization", f"Bearer {user.token}"), *lines],
        ) as response:
            body = b"".join([c async for c in response.aiter_raw()])
        assert response.headers["x-graphs-cache"] == "hit"
        assert response.headers.get("content-encoding") in readable, lines
        assert inflated(response.headers, body) == miss


async def test_a_huge_accept_encoding_is_refused_cleanly(gql, user, api):
    await create_graph(gql, user)
    status, _, body = await raw(gql, headers=bearer(user, ", ".join(["gzip"] * 20_000)))
    assert status in (200, 400, 431), (status, body[:200])
    status, _, body = await raw(gql, headers=bearer(user, "zstd"))
    assert status == 200
    assert "Traceback" not in api.log()


async def test_a_write_is_seen_at_once_whatever_the_encoding(gql, user):
    await create_graph(gql, user, echo_graph("first"))
    encodings = ("zstd", "gzip", "identity")
    for _ in range(2):
        for accept in encodings:
            await raw(gql, headers=bearer(user, accept))
    for n, accept in enumerate(encodings * 2):
        await create_graph(gql, user, echo_graph(f"written {n}"))
        for seen_with in (accept, *encodings):
            status, headers, body = await raw(gql, headers=bearer(user, seen_with))
            assert status == 200
            assert f'"written {n}"'.encode() in inflated(headers, body), (accept, seen_with)


async def test_users_never_see_each_others_cached_answers(gql, new_user):
    ada, bob = new_user(), new_user()
    for person in (ada, bob):
        await gql.ok("{ me { id } }", token=person.token)
    await create_graph(gql, ada, echo_graph("ada only"))
    for accept in ("zstd", "gzip", "identity", "zstd", "gzip", "identity"):
        await raw(gql, headers=bearer(ada, accept))
        status, headers, theirs = await raw(gql, headers=bearer(bob, accept))
        assert status == 200
        assert b"ada only" not in inflated(headers, theirs)
        assert b'"totalCount":0' in inflated(headers, theirs)


async def test_keys_without_read_graph_and_revoked_keys_get_no_cached_answer(gql, user):
    await create_graph(gql, user, echo_graph("secret"))
    for accept in ("zstd", "gzip", "identity"):
        await raw(gql, headers=bearer(user, accept))
    executor = await create_key(gql, user, permissions=("EXECUTE_GRAPH", "READ_EXECUTION"))
    reader = await create_key(gql, user, permissions=("READ_GRAPH",))
    for accept in ("zstd", "gzip", "identity", "*"):
        headers = {"X-API-Key": executor["plainTextKey"], "Accept-Encoding": accept}
        _, got, body = await raw(gql, headers=headers)
        assert got.get("x-graphs-cache") is None and got.get("content-encoding") is None
        assert b"secret" not in body and b"FORBIDDEN" in body
    await gql.ok(
        "mutation($id: ID!) { revokeApiKey(id: $id) { id } }",
        {"id": reader["apiKey"]["id"]},
        token=user.token,
    )
    deadline = asyncio.get_running_loop().time() + 15
    while True:
        headers = {"X-API-Key": reader["plainTextKey"], "Accept-Encoding": "zstd"}
        _, got, body = await raw(gql, headers=headers)
        if b"UNAUTHENTICATED" in inflated(got, body):
            assert got.get("x-graphs-cache") is None
            break
        assert asyncio.get_running_loop().time() < deadline, "the revoked key still reads"
        await asyncio.sleep(0.2)
    for token in ("not-a-token", None):
        headers = {"Accept-Encoding": "zstd"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        _, got, body = await raw(gql, headers=headers)
        assert got.get("x-graphs-cache") is None and b"UNAUTHENTICATED" in body


async def test_errors_are_never_cached(gql, user):
    await create_graph(gql, user)
    query = "query($n: Int!, $a: String) { graphs(first: $n, after: $a) { totalCount } }"
    for variables in ({"n": 100_000}, {"n": -1}, {"n": 5, "a": "not a cursor"}):
        for accept in ("zstd", "gzip", "identity", "zstd"):
            _, headers, body = await raw(gql, query, variables, bearer(user, accept))
            assert headers.get("x-graphs-cache") != "hit", (variables, accept)
            assert b'"errors"' in inflated(headers, body), (variables, body[:200])
