"""Argument values the server could not store are refused before validation.

Text with U+0000, numbers that are infinite or beyond 64 bits, and values
nested too deeply (app/storable.py) used to fail at the database or the JSON
encoder as INTERNAL errors, or to change silently (found by
tests/test_fuzz.py). No argument of the API has a use for them, so one check
at the edge covers every operation: literals in the document, and every value
in the variables, JSON values (and their keys) included. The answer is
BAD_USER_INPUT, and nothing runs.

It runs as the validation step starts: strawberry skips its own validation
once an extension has recorded errors, which also keeps graphql-core from
reading an integer literal of more than 4300 digits (Python refuses to, and
graphql-core lets that through unhandled).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from graphql import (
    BREAK,
    FloatValueNode,
    GraphQLError,
    IntValueNode,
    StringValueNode,
    ValueNode,
    Visitor,
    visit,
)
from strawberry.extensions import SchemaExtension

from app.errors import bad_input
from app.storable import BAD_NUMBER, NUL, NUL_TEXT, first_unstorable, int_fits


class RefuseUnstorableValues(SchemaExtension):
    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        if not context.pre_execution_errors:
            error = _variables_error(context.variables or {}) or _literal_error_of(
                context.query, context.graphql_document
            )
            if error is not None:
                context.pre_execution_errors = [error]
        yield


def _variables_error(variables: dict[str, Any]) -> GraphQLError | None:
    for name, value in variables.items():
        found = first_unstorable(value, f"${name}")
        if found is not None:
            problem, path = found
            refusal = bad_input(f"{problem}: {path}", variable=path)
            return GraphQLError(refusal.message, original_error=refusal)
    return None


class _FirstUnstorableLiteral(Visitor):
    def __init__(self) -> None:
        super().__init__()
        self.found: tuple[str, ValueNode] | None = None

    def _stop_at(self, problem: str, node: ValueNode) -> Any:
        self.found = (problem, node)
        return BREAK

    def enter_string_value(self, node: StringValueNode, *_args: Any) -> Any:
        return self._stop_at(NUL_TEXT, node) if NUL in node.value else None

    def enter_int_value(self, node: IntValueNode, *_args: Any) -> Any:
        # Length first: int() refuses more than 4300 digits.
        fits = len(node.value.lstrip("-")) <= 19 and int_fits(int(node.value))
        return None if fits else self._stop_at(BAD_NUMBER, node)

    def enter_float_value(self, node: FloatValueNode, *_args: Any) -> Any:
        return None if math.isfinite(float(node.value)) else self._stop_at(BAD_NUMBER, node)


# Literals are part of the query text, so the answer is kept per text (the
# same few texts arrive again and again); bounded like strawberry's caches.
_LITERALS_SEEN: dict[str, GraphQLError | None] = {}
_LITERALS_SEEN_MAX = 256


def _literal_error_of(query: str | None, document: Any) -> GraphQLError | None:
    if query is None:
        return _literal_error(document)
    if query not in _LITERALS_SEEN:
        if len(_LITERALS_SEEN) >= _LITERALS_SEEN_MAX:
            _LITERALS_SEEN.clear()
        _LITERALS_SEEN[query] = _literal_error(document)
    return _LITERALS_SEEN[query]


def _literal_error(document: Any) -> GraphQLError | None:
    if document is None:
        return None
    finder = _FirstUnstorableLiteral()
    visit(document, finder)
    if finder.found is None:
        return None
    problem, node = finder.found
    refusal = bad_input(problem)
    return GraphQLError(refusal.message, nodes=[node], original_error=refusal)
