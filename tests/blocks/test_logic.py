"""Calculator and Condition, run directly."""

from __future__ import annotations

import time

import pytest

from app.blocks.base import BlockError, InvalidBlockInput
from app.blocks.logic import Calculator, Condition
from tests.blocks.conftest import run_block


def test_schemas_list_exactly_the_declared_pins() -> None:
    calc, cond = Calculator(), Condition()
    assert set(calc.input_schema()["properties"]) == {"operation", "a", "b", "round_result"}
    assert set(calc.output_schema()["properties"]) == {"result", "error"}
    assert calc.required_input_pins() == {"operation", "a", "b"}
    assert set(cond.input_schema()["properties"]) == {
        "value1",
        "operator",
        "value2",
        "yes_value",
        "no_value",
    }
    assert set(cond.output_schema()["properties"]) == {"result", "yes_output", "no_output", "error"}
    assert cond.required_input_pins() == {"value1", "operator", "value2"}


# Calculator


async def calc(operation: str, a: object, b: object, **extra: object) -> object:
    outputs = await run_block(Calculator(), {"operation": operation, "a": a, "b": b, **extra})
    assert [pin for pin, _ in outputs] == ["result"]
    return outputs[0][1]


@pytest.mark.parametrize(
    ("operation", "a", "b", "expected"),
    [
        ("add", 2, 3, 5),
        ("subtract", 2, 5, -3),
        ("multiply", 4, 2.5, 10.0),
        ("divide", 7, 2, 3.5),
        ("power", 2, 10, 1024),
        ("power", 2, -1, 0.5),
        ("add", 0.1, 0.2, 0.1 + 0.2),
    ],
)
async def test_calculator_operations(operation: str, a: float, b: float, expected: float) -> None:
    assert await calc(operation, a, b) == expected


async def test_calculator_keeps_whole_numbers_whole_only_for_integer_inputs() -> None:
    result = await calc("multiply", 3, 4)
    assert result == 12 and isinstance(result, int)
    result = await calc("add", 1.5, 1.5)
    assert result == 3.0 and isinstance(result, float)
    result = await calc("power", 1, -2)
    assert result == 1 and isinstance(result, int)
    # Division always gives a float, as the block describes.
    assert isinstance(await calc("divide", 6, 3), float)


async def test_calculator_accepts_numeric_strings() -> None:
    assert await calc("add", "2", "0.5") == 2.5


async def test_calculator_rounds_half_away_from_zero() -> None:
    assert await calc("divide", 5, 2, round_result=True) == 3
    assert await calc("divide", -5, 2, round_result=True) == -3
    result = await calc("multiply", 1.2, 1, round_result=True)
    assert result == 1 and isinstance(result, int)


async def test_calculator_rejects_division_by_zero() -> None:
    for b in (0, 0.0):
        with pytest.raises(BlockError, match="zero"):
            await calc("divide", 1, b)
    with pytest.raises(BlockError, match="zero"):
        await calc("power", 0, -1)


async def test_calculator_guards_against_huge_powers() -> None:
    started = time.monotonic()
    with pytest.raises(BlockError, match="exponent"):
        await calc("power", 10, 10**9)
    with pytest.raises(BlockError, match="exponent"):
        await calc("power", 2, -1001)
    with pytest.raises(BlockError, match="too large"):
        await calc("power", 10.0, 400)
    with pytest.raises(BlockError, match="too large"):
        await calc("power", 10, 400)
    with pytest.raises(BlockError, match="too large"):
        await calc("multiply", 1e308, 10)
    assert time.monotonic() - started < 1


async def test_calculator_results_fit_in_json_numbers() -> None:
    # Integers beyond 64 bits cannot be sent on; they come back as floats.
    result = await calc("power", 2, 100)
    assert result == float(2**100) and isinstance(result, float)


async def test_calculator_refuses_complex_results() -> None:
    with pytest.raises(BlockError, match="not a real number"):
        await calc("power", -8, 0.5)


@pytest.mark.parametrize(
    ("payload", "pin"),
    [
        ({"operation": "modulo", "a": 1, "b": 2}, "operation"),
        ({"operation": "add", "a": "abc", "b": 2}, "a"),
        ({"operation": "add", "a": 1, "b": [2]}, "b"),
        ({"operation": "add", "a": 1, "b": "nan"}, "b"),
        ({"operation": "add", "a": 1}, "b"),
        ({"operation": "add", "a": 1, "b": 2, "c": 3}, "c"),
    ],
)
def test_calculator_refuses_bad_pins(payload: dict, pin: str) -> None:
    with pytest.raises(InvalidBlockInput) as info:
        Calculator().validate_input(payload)
    assert set(info.value.errors) == {pin}


# Condition


async def condition(value1: object, operator: str, value2: object, **extra: object) -> list:
    payload = {"value1": value1, "operator": operator, "value2": value2, **extra}
    return await run_block(Condition(), payload)


@pytest.mark.parametrize(
    ("value1", "operator", "value2", "expected"),
    [
        (1, "==", 1, True),
        ("a", "==", "b", False),
        ("a", "!=", "b", True),
        (3, ">", 2, True),
        (3, "<", 2, False),
        (2, ">=", 2, True),
        (2.5, "<=", 2, False),
        ("apple", "<", "banana", True),
        ({"a": 1}, "==", {"a": 1}, True),
        (None, "==", None, True),
    ],
)
async def test_condition_operators(
    value1: object, operator: str, value2: object, expected: bool
) -> None:
    outputs = await condition(value1, operator, value2)
    assert outputs[0] == ("result", expected)


async def test_condition_routes_to_exactly_one_branch() -> None:
    outputs = await condition(5, ">", 3, yes_value="big", no_value="small")
    assert outputs == [("result", True), ("yes_output", "big")]
    outputs = await condition(1, ">", 3, yes_value="big", no_value="small")
    assert outputs == [("result", False), ("no_output", "small")]


async def test_condition_branches_default_to_value1() -> None:
    assert await condition("x", "==", "x") == [("result", True), ("yes_output", "x")]
    assert await condition("x", "==", "y") == [("result", False), ("no_output", "x")]


async def test_condition_compares_numeric_strings_as_numbers() -> None:
    # As strings "5" > "30" would hold; as numbers it does not.
    assert (await condition("5", ">", "30"))[0] == ("result", False)
    assert (await condition("5", ">", 3))[0] == ("result", True)
    assert (await condition(" 2.0 ", "==", 2))[0] == ("result", True)
    # The branch value is the original value1, not its number.
    assert (await condition("5", ">", 3))[1] == ("yes_output", "5")


async def test_condition_incomparable_values_are_a_block_error() -> None:
    with pytest.raises(BlockError, match="cannot compare text with number using >"):
        await condition("abc", ">", 3)
    with pytest.raises(BlockError, match="null"):
        await condition(None, "<", 1)
    with pytest.raises(BlockError, match="object"):
        await condition({"a": 1}, ">=", {"a": 1})
    # Equality between different kinds is simply false.
    assert (await condition("abc", "==", 3))[0] == ("result", False)


def test_condition_refuses_unknown_operators_and_pins() -> None:
    with pytest.raises(InvalidBlockInput) as info:
        Condition().validate_input({"value1": 1, "operator": "=~", "value2": 2})
    assert set(info.value.errors) == {"operator"}
    with pytest.raises(InvalidBlockInput) as info:
        Condition().validate_input({"value1": 1, "operator": "==", "value2": 2, "value3": 3})
    assert info.value.errors == {"value3": "no such input pin"}
