"""Cross-cutting schema extensions: error codes and masking, request limits.

Every error leaves with `extensions.code` (SEMANTICS.md §2). Domain errors keep
their message; errors from parsing and validation are about the client's own
document, so they keep theirs too; anything else is masked as "Internal server
error" with an `errorId` that the log line carries.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

from graphql import GraphQLError, parse
from strawberry.extensions import SchemaExtension
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.schema.schema import validate_document

from app.errors import AppError, ErrorCode
from app.metrics import RESOLVER_ERRORS

log = logging.getLogger("agentgraph.errors")

# strawberry's alias and token limiters report plain validation/parse errors; these phrases
# (strawberry's and graphql-core's wording) tell them apart from other mistakes.
_LIMIT_PHRASES = (
    "aliases found. Allowed",
    "Document contains more than",
)


def _present(error: GraphQLError) -> GraphQLError:
    if error.original_error is None and (error.extensions or {}).get("code"):
        return error  # already presented (streams pass results through twice)
    original = error.original_error
    while isinstance(original, GraphQLError) and original.original_error is not None:
        original = original.original_error
    if isinstance(original, AppError):
        code = original.code
        extensions = original.as_extensions()
        message = original.message
    elif isinstance(original, InvalidOperationTypeError | CannotGetOperationTypeError):
        # e.g. a query over the legacy graphql-ws protocol, which carries only subscriptions
        code = ErrorCode.BAD_USER_INPUT
        extensions = {"code": code.value}
        message = _operation_type_message(original)
    elif original is None or isinstance(original, GraphQLError):
        code = (
            ErrorCode.QUERY_TOO_COMPLEX
            if any(phrase in error.message for phrase in _LIMIT_PHRASES)
            else ErrorCode.BAD_USER_INPUT
        )
        extensions = {**(error.extensions or {}), "code": code.value}
        message = error.message
    else:
        code = ErrorCode.INTERNAL
        error_id = uuid.uuid4().hex
        log.error(
            "unexpected error %s in %s",
            error_id,
            ".".join(str(p) for p in error.path or ()) or "operation",
            exc_info=(type(original), original, original.__traceback__),
            extra={"error_id": error_id},
        )
        extensions = {"code": code.value, "errorId": error_id}
        message = "Internal server error"
    RESOLVER_ERRORS.labels(code=code.value).inc()
    return GraphQLError(
        message,
        nodes=error.nodes,
        source=error.source,
        positions=error.positions,
        path=error.path,
        original_error=None,
        extensions=extensions,
    )


def _operation_type_message(error: Exception) -> str:
    if isinstance(error, InvalidOperationTypeError):
        return f"{error.operation_type.value} operations are not allowed here"
    return "The operation type could not be determined (is operationName right?)"


def present_errors(errors: list[GraphQLError]) -> list[GraphQLError]:
    return [_present(error) for error in errors]


class ErrorCodes(SchemaExtension):
    def on_operation(self) -> Iterator[None]:
        yield
        self._present_result(self.execution_context.result)

    def on_stream_result(self, result: Any) -> Iterator[None]:
        # Websocket operations (and every subscription event) arrive here.
        self._present_result(result)
        yield None

    @staticmethod
    def _present_result(result: Any) -> None:
        if result is not None and getattr(result, "errors", None):
            result.errors = present_errors(result.errors)


# Distinct query texts whose parse and validation are kept: clients send the
# same few operations again and again; a flood of unique texts only evicts.
QUERIES_KEPT = 256

_parse = lru_cache(maxsize=QUERIES_KEPT)(parse)
_validate = lru_cache(maxsize=QUERIES_KEPT)(validate_document)


class CachedParse(SchemaExtension):
    """The document of a query text, parsed once. A text that does not parse is
    left to strawberry's own parse, which reports it as a client mistake
    (strawberry's ParserCache would raise it past the error presentation)."""

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        if context.query:
            with contextlib.suppress(GraphQLError):
                context.graphql_document = _parse(context.query, **context.parse_options)
        yield


class CachedValidation(SchemaExtension):
    """Validation of a (document, rules) pair, computed once: with the parser
    cache the same query text gives the same document object, and the rules
    are built once per schema. Skipped when an earlier extension refused the
    request already."""

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        if context.pre_execution_errors is None and context.graphql_document is not None:
            context.pre_execution_errors = _validate(
                context.schema._schema, context.graphql_document, context.validation_rules
            )
        yield
