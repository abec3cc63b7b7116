"""The block catalogue and executeBlock through GraphQL (SEMANTICS.md §5)."""

from __future__ import annotations

import asyncio
import uuid

from app.blocks.registry import get_block
from app.models import CreditTransaction, CreditTransactionType
from app.services import blocks as block_service
from app.services import ledger
from app.settings import get_settings
from tests.graph_builders import block_id

BLOCKS = """query($c: String) { blocks(category: $c) { id name description categories
  inputSchema outputSchema staticOutput disabled costs { amount type filter } } }"""
BLOCK = "query($id: ID!) { block(id: $id) { name disabled costs { amount type filter } } }"
EXECUTE = """mutation($id: ID!, $input: JSON!) {
  executeBlock(blockId: $id, input: $input) { outputs cost } }"""

EXPECTED = {
    "AgentInput",
    "AgentOutput",
    "StoreValue",
    "ReadFile",
    "TextTemplate",
    "Calculator",
    "Condition",
    "MatchTextPattern",
    "ExtractText",
    "FindInDictionary",
    "CreateDictionary",
    "CreateList",
    "AddToList",
    "ForEach",
    "JsonParse",
    "JsonStringify",
    "SplitText",
    "JoinText",
    "CountItems",
    "Wait",
    "CurrentTime",
    "HttpRequest",
    "SubGraph",
    "LLMCall",
    "WebhookTrigger",
    "HumanReview",
}


async def test_blocks_lists_every_enabled_block_with_schemas(gql, user):
    listed = (await gql.ok(BLOCKS, token=user.token))["blocks"]
    names = {b["name"] for b in listed}
    # LLMCall is disabled here (no LLM_API_BASE), so it is not listed.
    assert names == EXPECTED - {"LLMCall"}
    for block in listed:
        assert block["disabled"] is False
        assert block["inputSchema"]["type"] == "object"
        assert "error" in block["outputSchema"]["properties"]
    store = next(b for b in listed if b["name"] == "StoreValue")
    assert store["staticOutput"] is True
    assert set(store["inputSchema"]["properties"]) == {"input", "data"}
    wait = next(b for b in listed if b["name"] == "Wait")
    assert wait["costs"] == [{"amount": 1, "type": "SECOND", "filter": {}}]


async def test_block_by_id_shows_disabled_blocks_and_null_for_unknown(gql, user):
    llm = (await gql.ok(BLOCK, {"id": block_id("LLMCall")}, token=user.token))["block"]
    assert llm["name"] == "LLMCall" and llm["disabled"] is True
    assert any(c["filter"] for c in llm["costs"])
    for unknown in (str(uuid.uuid4()), "not-an-id"):
        assert (await gql.ok(BLOCK, {"id": unknown}, token=user.token))["block"] is None


async def test_category_filter(gql, user):
    listed = (await gql.ok(BLOCKS, {"c": "logic"}, token=user.token))["blocks"]
    assert {b["name"] for b in listed} >= {"Calculator", "Condition"}
    assert all("LOGIC" in b["categories"] for b in listed)


async def test_catalogue_is_computed_once_and_shared_through_redis():
    settings = get_settings()
    first, second = block_service.BlockCatalog(settings), block_service.BlockCatalog(settings)
    try:
        await first.descriptors()
        await second.descriptors()
        await second.descriptors()
        # The run's API process already stored it, so neither had to build it.
        assert first.computed == 0 and second.computed == 0
        assert await first.descriptors() == await second.descriptors()
    finally:
        await first.aclose()
        await second.aclose()


async def test_catalogue_is_described_here_when_redis_is_away():
    """Lists of graphs find their nodes' blocks in the catalogue: Redis only
    shares the work of describing them."""
    settings = get_settings().model_copy(update={"REDIS_URL": "redis://127.0.0.1:9/0"})
    away, shared = block_service.BlockCatalog(settings), block_service.BlockCatalog(get_settings())
    try:
        assert await away.descriptors() == await shared.descriptors()
        assert away.computed == 1
    finally:
        await away.aclose()
        await shared.aclose()


async def test_execute_block_returns_outputs_per_pin(gql, user, worker):
    data = await gql.ok(
        EXECUTE, {"id": block_id("ForEach"), "input": {"items": ["a", "b"]}}, token=user.token
    )
    assert data["executeBlock"] == {"outputs": {"item": ["a", "b"], "key": [0, 1]}, "cost": 0}
    data = await gql.ok(
        EXECUTE,
        {"id": block_id("Calculator"), "input": {"operation": "divide", "a": 1, "b": 0}},
        token=user.token,
    )
    assert data["executeBlock"]["outputs"]["error"][0]


async def test_execute_block_charges_seconds(gql, user, worker):
    before = (await gql.ok("{ me { credits } }", token=user.token))["me"]["credits"]
    data = await gql.ok(
        EXECUTE, {"id": block_id("Wait"), "input": {"input": 7, "seconds": 1}}, token=user.token
    )
    assert data["executeBlock"] == {"outputs": {"output": [7]}, "cost": 1}
    after = (await gql.ok("{ me { credits } }", token=user.token))["me"]["credits"]
    assert after == before - 1
    usage = await CreditTransaction.filter(user_id=user.id, type="USAGE")
    assert [t.amount for t in usage] == [-1]


async def test_execute_block_bad_input_changes_nothing(gql, user, worker):
    before = await ledger.get_balance(user.id)
    cases = [
        (str(uuid.uuid4()), {}, "NOT_FOUND"),
        ("not-a-uuid", {}, "NOT_FOUND"),
        (block_id("LLMCall"), {"prompt": "hi"}, "FORBIDDEN"),
        (block_id("Calculator"), {"operation": "modulo", "a": 1, "b": 2}, "BAD_USER_INPUT"),
        (block_id("StoreValue"), {"nope": 1}, "BAD_USER_INPUT"),
        (block_id("StoreValue"), [1, 2], "BAD_USER_INPUT"),
        (block_id("Wait"), {"seconds": -1}, "BAD_USER_INPUT"),
    ]
    for block, payload, code in cases:
        error = await gql.error(EXECUTE, {"id": block, "input": payload}, token=user.token)
        assert error["extensions"]["code"] == code, (block, payload)
    error = await gql.error(
        EXECUTE,
        {"id": block_id("Calculator"), "input": {"operation": "modulo", "a": 1, "b": 2}},
        token=user.token,
    )
    assert "operation" in error["extensions"]["pinErrors"]
    assert await ledger.get_balance(user.id) == before
    assert await CreditTransaction.filter(user_id=user.id, type="USAGE").count() == 0


async def test_execute_block_refuses_when_the_cost_is_above_the_balance(gql, user, worker):
    balance = await ledger.get_balance(user.id)
    await ledger.record_transaction(
        user.id, -balance, CreditTransactionType.USAGE, f"drain:{user.id}"
    )
    for block, payload in (
        (block_id("HttpRequest"), {"url": "https://example.com"}),
        (block_id("Wait"), {"seconds": 1}),
    ):
        code = await gql.error_code(EXECUTE, {"id": block, "input": payload}, token=user.token)
        assert code == "INSUFFICIENT_CREDITS"
    assert await ledger.get_balance(user.id) == 0
    # Free blocks still run.
    data = await gql.ok(
        EXECUTE, {"id": block_id("StoreValue"), "input": {"data": 1}}, token=user.token
    )
    assert data["executeBlock"]["cost"] == 0


async def test_api_key_scopes_for_blocks(gql, user, worker):
    async def key(permission: str) -> str:
        data = await gql.ok(
            'mutation($p: [ApiKeyPermission!]!) { createApiKey(input: {name: "k", '
            "permissions: $p}) { plainTextKey } }",
            {"p": [permission]},
            token=user.token,
        )
        return data["createApiKey"]["plainTextKey"]

    reader, runner = await key("READ_BLOCK"), await key("EXECUTE_BLOCK")
    assert (await gql.ok("{ blocks { id } }", api_key=reader))["blocks"]
    assert await gql.error_code("{ blocks { id } }", api_key=runner) == "FORBIDDEN"
    payload = {"id": block_id("StoreValue"), "input": {"data": 2}}
    assert (await gql.ok(EXECUTE, payload, api_key=runner))["executeBlock"]["outputs"] == {
        "output": [2]
    }
    assert await gql.error_code(EXECUTE, payload, api_key=reader) == "FORBIDDEN"


async def test_execute_block_runs_on_a_worker_while_the_api_keeps_answering(api, gql, user, worker):
    """A catastrophic regex (exponential for Python's `re`) used to freeze the API
    process that ran it: /health did not answer for as long as it ran. The API runs
    no block code now, and the worker's engine gives the pattern 2 s."""
    import httpx

    answered_during = 0
    running = asyncio.Event()

    async def poll_health() -> None:
        nonlocal answered_during
        async with httpx.AsyncClient(base_url=api.base_url, timeout=30) as http:
            while True:
                response = await http.get("/health")
                assert response.status_code == 200
                if running.is_set():
                    answered_during += 1
                await asyncio.sleep(0.02)

    poller = asyncio.create_task(poll_health())
    try:
        running.set()
        data = await gql.ok(
            EXECUTE,
            {
                "id": block_id("MatchTextPattern"),
                "input": {"text": "a" * 40 + "!", "match": "(a|aa)+$"},
            },
            token=user.token,
        )
        running.clear()
    finally:
        poller.cancel()
    outputs = data["executeBlock"]["outputs"]
    assert "took longer than 2 s" in outputs["error"][0]
    assert "positive" not in outputs and "negative" not in outputs
    assert answered_during >= 5, answered_during
    # An ordinary pattern still matches.
    found = await gql.ok(
        EXECUTE,
        {
            "id": block_id("ExtractText"),
            "input": {"text": "ab12cd345", "pattern": r"\d+", "find_all": True},
        },
        token=user.token,
    )
    assert found["executeBlock"]["outputs"] == {"positive": ["12", "345"]}


async def test_execute_block_never_returns_raw_exception_text(gql, user, worker):
    """A header value outside ASCII made httpx raise UnicodeEncodeError inside
    HttpRequest, whose text reached the client (later masked); it is refused as
    input now, saying what is wrong. What a block raises unexpectedly is still
    shown only as an error id."""
    payload = {"url": "http://93.184.216.34/", "headers": {"X-Snow": "\u2603"}}
    answer = await gql.execute(
        EXECUTE, {"id": block_id("HttpRequest"), "input": payload}, token=user.token
    )
    [error] = answer["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert "header 'X-Snow': its value must be printable ASCII" in error["message"]
    assert "codec" not in error["message"]
    block = get_block(block_id("HttpRequest"))
    shown = block_service.unexpected_block_error(block, UnicodeEncodeError("ascii", "☃", 0, 1, "x"))
    assert shown.startswith("HttpRequest failed unexpectedly (error id ") and "ascii" not in shown


async def test_concurrent_execute_block_waits_never_overspend(gql, new_user, worker):
    """Ten executeBlock(Wait 3 s) at balance 1 at once used to take the balance to
    -29: a run with a per-second cost starts only if the available balance covers
    its minimum, and goes below zero only by what it ran past that minimum."""
    person = new_user()
    await gql.ok("{ me { id } }", token=person.token)
    balance = await ledger.get_balance(person.id)
    await ledger.record_transaction(
        person.id, 1 - balance, CreditTransactionType.USAGE, f"drain:{person.id}"
    )
    payload = {"id": block_id("Wait"), "input": {"input": 1, "seconds": 3}}
    answers = await asyncio.gather(
        *(gql.execute(EXECUTE, payload, token=person.token) for _ in range(10))
    )
    ran = [a for a in answers if not a.get("errors")]
    refused = [a["errors"][0]["extensions"]["code"] for a in answers if a.get("errors")]
    assert len(ran) == 1 and refused == ["INSUFFICIENT_CREDITS"] * 9, answers
    cost = ran[0]["data"]["executeBlock"]["cost"]
    assert cost >= 3
    # 1 was covered; it may go below zero only by the seconds it ran beyond that.
    assert await ledger.get_balance(person.id) == 1 - cost
    assert await ledger.get_available(person.id) == 1 - cost


async def test_text_template_never_backtracks_on_hostile_formats(gql, user, worker):
    """TextTemplate's own placeholder pattern backtracked cubically on an unclosed
    "{{" followed by whitespace: 2,000 spaces held the worker's event loop for 35 s
    (every run on it, its stops and its lease with it); 100,000 would take days."""
    hostile = "{{" + " " * 100_000 + "x {{ name }} {{" + "\t" * 50_000
    data = await gql.ok(
        EXECUTE,
        {"id": block_id("TextTemplate"), "input": {"format": hostile, "values": {"name": "A"}}},
        token=user.token,
    )
    assert data["executeBlock"]["outputs"] == {
        "output": ["{{" + " " * 100_000 + "x A {{" + "\t" * 50_000]
    }
    # Placeholders keep their meaning: spaces around keys, dotted paths.
    data = await gql.ok(
        EXECUTE,
        {
            "id": block_id("TextTemplate"),
            "input": {
                "format": "{{a}}-{{ b.c }}-{{\nd\t}}",
                "values": {"a": 1, "b": {"c": 2}, "d": 3},
            },
        },
        token=user.token,
    )
    assert data["executeBlock"]["outputs"] == {"output": ["1-2-3"]}


async def test_patterns_whose_counted_repeats_unroll_too_far_are_refused(gql, user, worker):
    """The match has a time limit, but compiling did not: `regex` unrolls counted
    repeats on the worker's event loop, and four nested {50} took 7 s (five: minutes
    and gigabytes). Such a pattern fails its node with a clear error, in both blocks
    that take one; ordinary counted repeats still work."""
    nested = "(?:(?:(?:(?:a{50}){50}){50}){50})"
    for block, pin in (("MatchTextPattern", "match"), ("ExtractText", "pattern")):
        data = await gql.ok(
            EXECUTE,
            {"id": block_id(block), "input": {"text": "aaaa", pin: nested}},
            token=user.token,
        )
        [error] = data["executeBlock"]["outputs"]["error"]
        assert "is too large" in error and "100,000" in error, error
    found = await gql.ok(
        EXECUTE,
        {
            "id": block_id("ExtractText"),
            "input": {"text": "id 2024-12-03!", "pattern": r"(\d{4}-\d{2}-\d{2})", "group": 1},
        },
        token=user.token,
    )
    assert found["executeBlock"]["outputs"] == {"positive": ["2024-12-03"]}


async def test_text_blocks_refuse_to_multiply_their_inputs_past_a_bound(gql, user, worker):
    """A 100 KB value named by 2,000 placeholders is 200 MB of text (the same
    request with 100x more is 20 GB, and the worker that builds it, then every worker
    that resumes the run, runs out of memory). Past 10,000,000 characters the node
    fails with a clear error instead; JoinText's delimiter multiplies the same way."""
    value = "x" * 100_000
    data = await gql.ok(
        EXECUTE,
        {
            "id": block_id("TextTemplate"),
            "input": {"format": "{{ v }}" * 2_000, "values": {"v": value}},
        },
        token=user.token,
    )
    assert data["executeBlock"]["outputs"] == {
        "error": ["the filled text would be longer than 10,000,000 characters"]
    }
    data = await gql.ok(
        EXECUTE,
        {"id": block_id("JoinText"), "input": {"input": [1] * 2_000, "delimiter": value}},
        token=user.token,
    )
    assert data["executeBlock"]["outputs"] == {
        "error": ["the joined text would be longer than 10,000,000 characters"]
    }
    # Up to the bound, both build their text.
    data = await gql.ok(
        EXECUTE,
        {
            "id": block_id("TextTemplate"),
            "input": {"format": "<{{v}}>" * 20, "values": {"v": value}},
        },
        token=user.token,
    )
    assert data["executeBlock"]["outputs"] == {"output": [f"<{value}>" * 20]}
