"""Argument values the server could not store are refused before validation.

Text with U+0000 or lone surrogates, numbers that are infinite or beyond 64
bits, and values nested too deeply (app/storable.py) used to fail at the
database or the JSON encoder as INTERNAL errors, or to change silently (found
by tests/test_fuzz.py). No argument of the API has a use for them, so one
check at the edge covers every operation: literals in the document (once per
query text, by the request gate) and every value in the variables, JSON
values (and their keys) included. The answer is BAD_USER_INPUT, and nothing
runs.

The literal check runs before validation, which also keeps graphql-core from
reading an integer literal of more than 4300 digits (Python refuses to, and
graphql-core lets that through unhandled). graphql-core's lexer refuses lone
surrogates in literals itself.
"""

from __future__ import annotations

import math
from typing import Any

from graphql import (
    BREAK,
    DocumentNode,
    FloatValueNode,
    GraphQLError,
    IntValueNode,
    StringValueNode,
    ValueNode,
    Visitor,
    visit,
)

from app.errors import bad_input
from app.storable import BAD_NUMBER, NUL, NUL_TEXT, first_unstorable, int_fits, text_problem


def variables_error(variables: dict[str, Any]) -> GraphQLError | None:
    for name, value in variables.items():
        problem = text_problem(str(name))
        if problem:  # not quoted back: the answer could not carry it
            refusal = bad_input(f"{problem}: a variable's name")
            return GraphQLError(refusal.message, original_error=refusal)
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


def literal_error(document: DocumentNode) -> GraphQLError | None:
    finder = _FirstUnstorableLiteral()
    visit(document, finder)
    if finder.found is None:
        return None
    problem, node = finder.found
    refusal = bad_input(problem)
    return GraphQLError(refusal.message, nodes=[node], original_error=refusal)
