"""Blocks that compute and decide: arithmetic and comparisons."""

from __future__ import annotations

import math
import operator
import uuid
from typing import Any, Literal

from pydantic import Field, FiniteFloat

from app.blocks.base import (
    Block,
    BlockCategory,
    BlockError,
    BlockInput,
    BlockOutput,
    BlockRunContext,
)

Operation = Literal["add", "subtract", "multiply", "divide", "power"]
ComparisonOperator = Literal["==", "!=", ">", "<", ">=", "<="]

# Big integer powers take real CPU time and memory; no useful graph needs more.
MAX_EXPONENT = 1000
# Results are sent with orjson, which refuses integers outside 64 bits.
_INT64_MAX = 2**63 - 1

_OPERATIONS = {
    "add": operator.add,
    "subtract": operator.sub,
    "multiply": operator.mul,
    "divide": operator.truediv,
    "power": operator.pow,
}
_COMPARISONS = {
    "==": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    "<": operator.lt,
    ">=": operator.ge,
    "<=": operator.le,
}
_KINDS = {str: "text", int: "number", float: "number", bool: "boolean", dict: "object"}


def _round_half_away(value: float) -> int:
    # round() rounds halves to even (2.5 -> 2), which surprises people doing sums.
    return int(math.copysign(math.floor(abs(value) + 0.5), value))


def _sendable(result: Any, keep_int: bool) -> int | float:
    """The result as a JSON number the rest of the system can carry."""
    if isinstance(result, complex):
        raise BlockError("the result is not a real number")
    if isinstance(result, float):
        if not math.isfinite(result):
            raise BlockError("the result is too large")
        if keep_int and result.is_integer():
            result = int(result)
    if isinstance(result, int) and abs(result) > _INT64_MAX:
        try:
            return float(result)
        except OverflowError:
            raise BlockError("the result is too large") from None
    return result


class Calculator(Block):
    id = uuid.UUID("dc539d0f-6ab8-48db-97fe-52e807b49e08")
    name = "Calculator"
    description = (
        "Applies `operation` (add, subtract, multiply, divide, power) to the numbers `a` and "
        "`b` and yields `result`: a whole number when both are whole (except for divide), "
        "rounded to the nearest whole number when `round_result` is set. Dividing by zero, "
        f"exponents beyond ±{MAX_EXPONENT} and results too large to represent are errors."
    )
    categories = (BlockCategory.LOGIC,)

    class Input(BlockInput):
        operation: Operation = Field(description="add, subtract, multiply, divide or power.")
        a: int | FiniteFloat = Field(description="The first number.")
        b: int | FiniteFloat = Field(description="The second number.")
        round_result: bool = Field(
            default=False, description="Round the result to the nearest whole number."
        )

    class Output(BlockOutput):
        result: int | float = Field(description="The result of the operation.")

    async def run(self, input: Input, context: BlockRunContext):
        a, b = input.a, input.b
        if input.operation == "divide" and b == 0:
            raise BlockError("cannot divide by zero")
        if input.operation == "power" and abs(b) > MAX_EXPONENT:
            raise BlockError(f"the exponent must be between -{MAX_EXPONENT} and {MAX_EXPONENT}")
        try:
            result = _OPERATIONS[input.operation](a, b)
        except ZeroDivisionError:
            raise BlockError("cannot raise zero to a negative power") from None
        except OverflowError:
            raise BlockError("the result is too large") from None
        keep_int = input.operation != "divide" and isinstance(a, int) and isinstance(b, int)
        result = _sendable(result, keep_int)
        if input.round_result and isinstance(result, float):
            result = _sendable(_round_half_away(result), keep_int=True)
        yield "result", result


def _comparable(value: Any) -> Any:
    # Values arriving from text blocks are strings; "5" against 3 means the number 5.
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return value
        if math.isfinite(number):
            return number
    return value


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return _KINDS.get(type(value), "list" if isinstance(value, list) else type(value).__name__)


class Condition(Block):
    id = uuid.UUID("bd388ac2-ec81-4001-a160-b7c8af242c2c")
    name = "Condition"
    description = (
        "Compares `value1` with `value2` using `operator` (==, !=, >, <, >=, <=) and yields "
        "`result`, then `yes_value` on `yes_output` when true or `no_value` on `no_output` "
        "when false (each defaults to value1 when null). Numeric text compares as a number; "
        "ordering values that cannot be ordered (e.g. text against a number) is an error."
    )
    categories = (BlockCategory.LOGIC,)

    class Input(BlockInput):
        value1: Any = Field(description="The left-hand value.")
        operator: ComparisonOperator = Field(description="==, !=, >, <, >= or <=.")
        value2: Any = Field(description="The right-hand value.")
        yes_value: Any = Field(
            default=None, description="Yielded on yes_output when true; value1 when null."
        )
        no_value: Any = Field(
            default=None, description="Yielded on no_output when false; value1 when null."
        )

    class Output(BlockOutput):
        result: bool = Field(description="Whether the comparison holds.")
        yes_output: Any = Field(description="yes_value (or value1), only when true.")
        no_output: Any = Field(description="no_value (or value1), only when false.")

    async def run(self, input: Input, context: BlockRunContext):
        left, right = _comparable(input.value1), _comparable(input.value2)
        try:
            result = bool(_COMPARISONS[input.operator](left, right))
        except TypeError:
            raise BlockError(
                f"cannot compare {_kind(input.value1)} with {_kind(input.value2)} "
                f"using {input.operator}"
            ) from None
        yield "result", result
        if result:
            yield "yes_output", input.value1 if input.yes_value is None else input.yes_value
        else:
            yield "no_output", input.value1 if input.no_value is None else input.no_value
