"""Error codes, masking, and the request limits that run before any resolver (§2, §11)."""

from __future__ import annotations

import logging

import strawberry

from app.errors import AppError, ErrorCode
from app.models import User
from schema.extensions import ErrorCodes


def _chain(depth: int) -> str:
    """A selection `depth` fields deep. The schema's own object graph is
    shallow, so the fields are made up: the depth rule is checked on the
    document, beside the rule that reports unknown fields."""
    selection = "leaf"
    for level in range(depth - 1):
        selection = f"f{level} {{ {selection} }}"
    return "{ " + selection + " }"


async def _codes(gql, query: str, **kw) -> set[str]:
    body = await gql.execute(query, **kw)
    return {error["extensions"]["code"] for error in body.get("errors", [])}


async def test_query_deeper_than_twelve_is_too_complex(gql, user):
    assert "QUERY_TOO_COMPLEX" in await _codes(gql, _chain(13), token=user.token)
    assert "QUERY_TOO_COMPLEX" not in await _codes(gql, _chain(12), token=user.token)


async def test_too_many_aliases(gql, user):
    aliases = " ".join(f"a{i}: me {{ id }}" for i in range(31))
    error = await gql.error("{ " + aliases + " }", token=user.token)
    assert error["extensions"]["code"] == "QUERY_TOO_COMPLEX"
    ok = " ".join(f"a{i}: me {{ id }}" for i in range(30))
    assert "errors" not in await gql.execute("{ " + ok + " }", token=user.token)


async def test_too_many_tokens(gql, user):
    fields = " ".join("id" for _ in range(5001))
    error = await gql.error("{ me { " + fields + " } }", token=user.token)
    assert error["extensions"]["code"] == "QUERY_TOO_COMPLEX"


async def test_body_over_one_megabyte_is_refused_before_parsing(gql, user):
    padding = "#" + "x" * 1_000_001 + "\n"
    response = await gql.post(padding + "{ me { id } }", token=user.token)
    assert response.status_code == 413
    body = response.json()
    assert body["errors"][0]["extensions"]["code"] == "QUERY_TOO_COMPLEX"


async def test_limit_refusal_runs_no_resolver(gql, new_user):
    person = new_user()
    aliases = " ".join(f"a{i}: me {{ id }}" for i in range(31))
    await gql.error("{ " + aliases + " }", token=person.token)
    # `me` would have created the user; it never ran.
    assert await User.filter(id=person.id).count() == 0


async def test_syntax_and_validation_mistakes_are_bad_user_input(gql, user):
    for query in (
        "{ me { id ",
        "{ me { noSuchField } }",
        "mutation { updateTimezone(timezone: 5) { id } }",
    ):
        error = await gql.error(query, token=user.token)
        assert error["extensions"]["code"] == "BAD_USER_INPUT", query


async def test_unexpected_exceptions_are_masked_and_logged_with_an_id(caplog):
    @strawberry.type
    class Query:
        @strawberry.field
        def explode(self) -> str:
            raise RuntimeError("password=hunter2 at db.internal:5432")

        @strawberry.field
        def refuse(self) -> str:
            raise AppError(ErrorCode.CONFLICT, "Already done", detail=1)

    schema = strawberry.Schema(query=Query, extensions=[ErrorCodes])
    with caplog.at_level(logging.ERROR, logger="agentgraph.errors"):
        result = await schema.execute("{ explode }")
    error = result.errors[0]
    assert error.message == "Internal server error"
    assert error.extensions["code"] == "INTERNAL"
    error_id = error.extensions["errorId"]
    assert "hunter2" not in str(error.formatted)
    logged = [r for r in caplog.records if error_id in r.getMessage()]
    assert logged and "hunter2" in str(logged[0].exc_info[1])
    result = await schema.execute("{ refuse }")
    assert result.errors[0].message == "Already done"
    assert result.errors[0].extensions == {"code": "CONFLICT", "detail": 1}


async def test_depth_counts_through_fragments(gql, user):
    inner = _chain(11)[2:-2]  # 11 levels of made-up fields
    query = "fragment Deep on Query { wrap { " + inner + " } } { ...Deep x { y } }"
    assert "QUERY_TOO_COMPLEX" not in await _codes(gql, query, token=user.token)
    query = "fragment Deep on Query { a { wrap { " + inner + " } } } { ...Deep }"
    assert "QUERY_TOO_COMPLEX" in await _codes(gql, query, token=user.token)


@strawberry.type
class _Item:
    n: int

    @strawberry.field
    def broken(self) -> str | None:
        raise RuntimeError(f"item {self.n} is broken")


@strawberry.type
class _ItemsQuery:
    @strawberry.field
    def items(self, count: int) -> list[_Item]:
        return [_Item(n=0) for _ in range(count)]


async def test_a_field_failing_for_every_item_is_logged_once(caplog):
    """One request made thousands of tracebacks (a field failing per item of a
    list: `__Type.isOneOf` of wrapped types, 10 MB of log per request). The
    repeats of one failure share its errorId and one log line says how many."""
    schema = strawberry.Schema(query=_ItemsQuery, extensions=[ErrorCodes])
    with caplog.at_level(logging.ERROR, logger="agentgraph.errors"):
        result = await schema.execute("{ items(count: 500) { n broken } }")
    assert len(result.errors) == 500
    assert {e.extensions["code"] for e in result.errors} == {"INTERNAL"}
    [error_id] = {e.extensions["errorId"] for e in result.errors}
    ours = [r for r in caplog.records if r.name == "agentgraph.errors"]
    with_traceback = [r for r in ours if r.exc_info]
    assert len(with_traceback) == 1 and error_id in with_traceback[0].getMessage()
    assert [r.getMessage() for r in ours if not r.exc_info] == [
        f"unexpected error {error_id} happened 499 more times in this result"
    ]


async def test_field_errors_count_toward_max_response_bytes(settings):
    """Errors were not counted: a small query whose field fails for every item
    built megabytes of errors under MAX_RESPONSE_BYTES."""
    from types import SimpleNamespace

    from schema.executor import AgentGraphExecutor
    from schema.request_gate import DocumentGate, RequestGate

    capped = settings.model_copy(update={"MAX_RESPONSE_BYTES": 20_000})
    gate = DocumentGate(capped)
    schema = strawberry.Schema(
        query=_ItemsQuery,
        extensions=[lambda: RequestGate(gate)],
        execution_context_class=AgentGraphExecutor,
    )
    gate.bind(schema._schema)
    context = SimpleNamespace(settings=capped)
    small = await schema.execute("{ items(count: 50) { broken } }", context_value=context)
    assert len(small.errors) == 50
    large = await schema.execute("{ items(count: 5000) { broken } }", context_value=context)
    assert large.data is None
    assert [e.extensions["code"] for e in large.errors] == ["QUERY_TOO_COMPLEX"]
