"""Error codes and masking (SEMANTICS.md §2), for every result the schema gives.

Every error leaves with `extensions.code`. Domain errors keep their message;
errors from parsing and validation are about the client's own document, so
they keep theirs too (without graphql-core's "Did you mean …?" hints when the
explorer is off: they would spell out the schema); anything else is masked as
"Internal server error" with an `errorId` that the log line carries.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterator
from typing import Any

from graphql import GraphQLError
from graphql.validation.validate import ValidationAbortedError
from strawberry.extensions import SchemaExtension
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError

from app.errors import AppError, ErrorCode
from app.metrics import RESOLVER_ERRORS

log = logging.getLogger("agentgraph.errors")

# graphql-core's parser reports its token limit as a plain syntax error; this
# phrase tells it apart from other mistakes.
_LIMIT_PHRASES = ("Document contains more than",)
_SUGGESTION = re.compile(r" ?Did you mean [^?]*\?")


def _present(
    error: GraphQLError, hide_suggestions: bool = False, logged: dict | None = None
) -> GraphQLError:
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
        # "Validation aborted": graphql-core's own budget for a costly document ran out.
        too_complex = isinstance(error, ValidationAbortedError) or any(
            phrase in error.message for phrase in _LIMIT_PHRASES
        )
        code = ErrorCode.QUERY_TOO_COMPLEX if too_complex else ErrorCode.BAD_USER_INPUT
        extensions = {**(error.extensions or {}), "code": code.value}
        message = _SUGGESTION.sub("", error.message) if hide_suggestions else error.message
    else:
        code = ErrorCode.INTERNAL
        error_id = _log_internal(error, original, {} if logged is None else logged)
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


def _log_internal(error: GraphQLError, original: BaseException, logged: dict) -> str:
    """Logs an unexpected error with its traceback and returns its errorId. The
    same failure at many places of one result (a field failing for every item
    of a list) is logged once: its repeats share the first one's errorId."""
    where = ".".join(str(p) for p in error.path or () if not isinstance(p, int)) or "operation"
    key = (type(original), str(original), where)
    known = logged.get(key)
    if known is not None:
        known[1] += 1
        return known[0]
    error_id = uuid.uuid4().hex
    logged[key] = [error_id, 0]
    log.error(
        "unexpected error %s in %s",
        error_id,
        ".".join(str(p) for p in error.path or ()) or "operation",
        exc_info=(type(original), original, original.__traceback__),
        extra={"error_id": error_id},
    )
    return error_id


def _operation_type_message(error: Exception) -> str:
    if isinstance(error, InvalidOperationTypeError):
        return f"{error.operation_type.value} operations are not allowed here"
    return "The operation type could not be determined (is operationName right?)"


def present_errors(
    errors: list[GraphQLError], hide_suggestions: bool = False
) -> list[GraphQLError]:
    logged: dict = {}
    presented = [_present(error, hide_suggestions, logged) for error in errors]
    for error_id, repeats in logged.values():
        if repeats:
            log.error(
                "unexpected error %s happened %d more times in this result", error_id, repeats
            )
    return presented


class ErrorCodes(SchemaExtension):
    hide_suggestions = False

    def on_operation(self) -> Iterator[None]:
        yield
        self._present_result(self.execution_context.result)

    def on_stream_result(self, result: Any) -> Iterator[None]:
        # Websocket operations (and every subscription event) arrive here.
        self._present_result(result)
        yield None

    def _present_result(self, result: Any) -> None:
        if result is not None and getattr(result, "errors", None):
            result.errors = present_errors(result.errors, self.hide_suggestions)
