"""Lone UTF-16 surrogates (issue 13, finding 7): JSON can carry "\\ud800", Python
keeps it, but UTF-8 has no form for it, so PostgreSQL and the JSON encoder
failed on it (INTERNAL), and a block output holding one was retried as an
infrastructure failure for 22 minutes. Now they are refused at the edge like
NUL, and a block output with one fails its node at once."""

from __future__ import annotations

import base64
import json

import pytest

from tests.execution_helpers import execute, wait_for_end
from tests.graph_builders import create_graph, link, node

ONBOARDING = "{ onboarding { usageReason integrations agentInput } }"
UPDATE = "mutation($i: OnboardingInput!) { updateOnboarding(input: $i) { usageReason } }"


@pytest.mark.parametrize(
    ("variables", "where"),
    [
        ({"i": {"usageReason": "a\ud800b"}}, "$i.usageReason"),
        ({"i": {"integrations": ["ok", "\udfff"]}}, "$i.integrations.1"),
        # The path names no key it cannot write.
        ({"i": {"agentInput": {"k\udc00": 1}}}, "$i.agentInput (a key)"),
        ({"\ud800": {"usageReason": "\x00"}, "i": {}}, "a variable's name"),
    ],
    ids=["text", "list", "json-key", "variable-name"],
)
async def test_a_lone_surrogate_in_a_variable_is_bad_input(gql, user, variables, where):
    before = await gql.ok(ONBOARDING, token=user.token)
    body = await _raw(gql, {"query": UPDATE, "variables": variables}, user.token)
    [error] = body["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["message"].endswith(f"lone surrogates (U+D800 to U+DFFF): {where}")
    assert await gql.ok(ONBOARDING, token=user.token) == before


async def _raw(gql, body: dict, token: str):
    """A body with lone surrogates, as a client's JSON encoder writes them (escaped)."""
    response = await gql.http.post(
        "/graphql",
        content=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    assert response.headers["content-type"].startswith("application/json"), response.text
    return response.json()


async def test_a_lone_surrogate_in_the_query_text_is_bad_input(gql, user):
    # graphql-core's own syntax error quotes the character back, which no
    # encoder can write: the answer was a 500.
    body = await _raw(gql, {"query": '{ me { id } } # \ud800\n{ x(a: "\ud800") }'}, user.token)
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert "lone surrogates" in body["errors"][0]["message"]


async def test_a_lone_surrogate_in_the_operation_name_is_bad_input(gql, user):
    body = await _raw(
        gql, {"query": "query A { me { id } }", "operationName": "\ud800"}, user.token
    )
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


async def test_a_block_output_with_a_lone_surrogate_fails_its_node_at_once(gql, user, worker):
    """The ReadFile of the finding: `unicode_escape` turns the text \\ud800 into
    the character. The run ends FAILED with the reason, not retried."""
    spec = {
        "name": "surrogate output",
        "nodes": [
            node("in", "AgentInput", name="doc", type="file"),
            node("read", "ReadFile", encoding="unicode_escape"),
            node("out", "AgentOutput", name="content"),
        ],
        "links": [link("in", "result", "read", "file"), link("read", "content", "out", "value")],
    }
    graph = await create_graph(gql, user, spec)
    file_uri = "data:text/plain;base64," + base64.b64encode(b"half a pair: \\ud800").decode()
    started = await execute(gql, user, graph["id"], {"doc": file_uri})
    ended = await wait_for_end(gql, user, started["id"])
    assert ended["status"] == "FAILED"
    read = next(n for n in ended["nodeExecutions"] if n["status"] == "FAILED")
    assert "Output cannot be stored: Text must not contain lone surrogates" in read["error"]
