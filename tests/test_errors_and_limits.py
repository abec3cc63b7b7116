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
