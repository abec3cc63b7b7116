"""What a JSON value must be for the server to store it and send it on.

PostgreSQL cannot hold U+0000 in text or jsonb; a lone UTF-16 surrogate has
no UTF-8 form, so neither PostgreSQL nor the JSON encoder can write one; and
the encoder that writes jsonb columns and responses (orjson) refuses integers
beyond 64 bits and values nested deeper than 255 levels, and writes
infinities as null. Values
from clients (schema/storable_values.py) and parsed by blocks are checked
against these rules before they go anywhere.
"""

from __future__ import annotations

import math
import re
from typing import Any

NUL = "\x00"
# UTF-16 halves without their pair: Python strings can hold them (from JSON's
# "\ud800" escapes), but UTF-8 cannot, so neither PostgreSQL nor the JSON
# encoder can write them.
LONE_SURROGATE = re.compile("[\ud800-\udfff]")
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# Deep enough for any real input, well inside orjson's 255 with the levels the
# server wraps around a value when it stores or returns it.
MAX_NESTING = 100

NUL_TEXT = "Text must not contain NUL characters (U+0000)"
SURROGATE_TEXT = "Text must not contain lone surrogates (U+D800 to U+DFFF)"
BAD_NUMBER = "Numbers must be finite and fit in 64 bits"
TOO_DEEP = f"Values must not nest deeper than {MAX_NESTING} levels"


def int_fits(value: int) -> bool:
    return INT64_MIN <= value <= INT64_MAX


def text_problem(text: str) -> str | None:
    """Why `text` cannot be stored, None when it can."""
    if NUL in text:
        return NUL_TEXT
    if LONE_SURROGATE.search(text):
        return SURROGATE_TEXT
    return None


def first_unstorable(value: Any, path: str = "$", depth: int = 0) -> tuple[str, str] | None:
    """The first part of a JSON value that breaks a rule: (which rule, where, as
    `$.field.0`); None when the whole value is fine."""
    if isinstance(value, str):
        problem = text_problem(value)
        return (problem, path) if problem else None
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return None if int_fits(value) else (BAD_NUMBER, path)
    if isinstance(value, float):
        return None if math.isfinite(value) else (BAD_NUMBER, path)
    if isinstance(value, dict | list):
        if depth >= MAX_NESTING:
            return TOO_DEEP, path
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            problem = text_problem(str(key))
            if problem:
                return problem, f"{path} (a key)"
            found = first_unstorable(item, f"{path}.{key}", depth + 1)
            if found is not None:
                return found
    return None
