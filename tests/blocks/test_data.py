"""The data blocks, run directly."""

from __future__ import annotations

import json

import pytest

from app.blocks.base import Block, BlockError, InvalidBlockInput
from app.blocks.data import (
    AddToList,
    CountItems,
    CreateDictionary,
    CreateList,
    FindInDictionary,
    ForEach,
    JsonParse,
    JsonStringify,
)
from tests.blocks.conftest import run_block


@pytest.mark.parametrize(
    ("block", "inputs", "outputs"),
    [
        (FindInDictionary(), {"input", "key"}, {"output", "missing"}),
        (CreateDictionary(), {"values"}, {"dictionary"}),
        (CreateList(), {"values"}, {"list"}),
        (AddToList(), {"list", "entry", "entries", "position"}, {"updated_list"}),
        (ForEach(), {"items"}, {"item", "key"}),
        (JsonParse(), {"text"}, {"result"}),
        (JsonStringify(), {"value", "indent", "sort_keys"}, {"text"}),
        (CountItems(), {"collection"}, {"count"}),
    ],
)
def test_schemas_list_exactly_the_declared_pins(
    block: Block, inputs: set[str], outputs: set[str]
) -> None:
    assert set(block.input_schema()["properties"]) == inputs
    assert set(block.output_schema()["properties"]) == outputs | {"error"}
    assert all(p.get("description") for p in block.input_schema()["properties"].values())


# FindInDictionary


@pytest.mark.parametrize(
    ("data", "key", "expected"),
    [
        ({"a": 1, "b": 2}, "b", 2),
        ({"a": {"b": [10, {"c": "deep"}]}}, "a.b.1.c", "deep"),
        ({"a.b": "whole", "a": {"b": "path"}}, "a.b", "whole"),
        (["x", "y", "z"], 1, "y"),
        (["x", "y", "z"], "2", "z"),
        (["x", "y", "z"], -1, "z"),
        ({"0": "zero"}, 0, "zero"),
        ('{"a": {"b": null}}', "a.b", None),
        ("[1, 2]", 0, 1),
    ],
)
async def test_find_in_dictionary_finds_values(data: object, key: object, expected: object) -> None:
    assert await run_block(FindInDictionary(), {"input": data, "key": key}) == [
        ("output", expected)
    ]


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"a": 1}, "b"),
        ({"a": {"b": 1}}, "a.c"),
        ({"a": 1}, "a.b"),
        (["x"], 1),
        (["x"], -2),
        (["x"], "first"),
        ('{"a": 1}', "z"),
    ],
)
async def test_find_in_dictionary_passes_the_input_on_missing(data: object, key: object) -> None:
    assert await run_block(FindInDictionary(), {"input": data, "key": key}) == [("missing", data)]


async def test_find_in_dictionary_refuses_what_is_not_a_collection() -> None:
    with pytest.raises(BlockError, match="invalid JSON"):
        await run_block(FindInDictionary(), {"input": "not json", "key": "a"})
    with pytest.raises(BlockError, match="must be an object or a list"):
        await run_block(FindInDictionary(), {"input": 5, "key": "a"})
    with pytest.raises(BlockError, match="must be an object or a list"):
        await run_block(FindInDictionary(), {"input": '"text"', "key": "a"})


# CreateDictionary, CreateList, AddToList


async def test_create_dictionary_and_list() -> None:
    values = {"a": 1, "b": [2]}
    assert await run_block(CreateDictionary(), {"values": values}) == [("dictionary", values)]
    assert await run_block(CreateDictionary(), {}) == [("dictionary", {})]
    assert await run_block(CreateList(), {"values": [1, "two", None]}) == [
        ("list", [1, "two", None])
    ]
    assert await run_block(CreateList(), {}) == [("list", [])]


async def test_create_list_wraps_a_single_value() -> None:
    assert await run_block(CreateList(), {"values": "p"}) == [("list", ["p"])]
    assert await run_block(CreateList(), {"values": {"a": 1}}) == [("list", [{"a": 1}])]


def test_create_dictionary_refuses_a_list() -> None:
    with pytest.raises(InvalidBlockInput) as info:
        CreateDictionary().validate_input({"values": [1]})
    assert set(info.value.errors) == {"values"}


async def test_add_to_list_appends_entry_then_entries_without_mutating() -> None:
    original = [1, 2]
    outputs = await run_block(AddToList(), {"list": original, "entry": 3, "entries": [4, 5]})
    assert outputs == [("updated_list", [1, 2, 3, 4, 5])]
    assert original == [1, 2]


async def test_add_to_list_inserts_at_position() -> None:
    payload = {"list": ["a", "d"], "entries": ["b", "c"], "position": 1}
    assert await run_block(AddToList(), payload) == [("updated_list", ["a", "b", "c", "d"])]
    payload = {"list": ["b"], "entry": "a", "position": 0}
    assert await run_block(AddToList(), payload) == [("updated_list", ["a", "b"])]
    payload = {"list": ["a"], "entry": "z", "position": 99}
    assert await run_block(AddToList(), payload) == [("updated_list", ["a", "z"])]


async def test_add_to_list_defaults() -> None:
    assert await run_block(AddToList(), {}) == [("updated_list", [])]
    assert await run_block(AddToList(), {"entry": 0}) == [("updated_list", [0])]
    assert await run_block(AddToList(), {"list": [1], "entry": None}) == [("updated_list", [1])]


def test_add_to_list_refuses_a_negative_position() -> None:
    with pytest.raises(InvalidBlockInput) as info:
        AddToList().validate_input({"list": [], "position": -1})
    assert set(info.value.errors) == {"position"}


# ForEach


async def test_for_each_yields_one_item_and_one_key_per_element_in_order() -> None:
    outputs = await run_block(ForEach(), {"items": ["a", {"b": 1}, None, "a"]})
    assert outputs == [
        ("item", "a"),
        ("key", 0),
        ("item", {"b": 1}),
        ("key", 1),
        ("item", None),
        ("key", 2),
        ("item", "a"),
        ("key", 3),
    ]


async def test_for_each_over_an_object_yields_keys_and_values() -> None:
    outputs = await run_block(ForEach(), {"items": {"x": 1, "y": [2]}})
    assert [v for pin, v in outputs if pin == "item"] == [1, [2]]
    assert [v for pin, v in outputs if pin == "key"] == ["x", "y"]


async def test_for_each_parses_json_text() -> None:
    outputs = await run_block(ForEach(), {"items": "[10, 20]"})
    assert outputs == [("item", 10), ("key", 0), ("item", 20), ("key", 1)]


async def test_for_each_empty_collections_yield_nothing() -> None:
    for items in ([], {}, "[]"):
        assert await run_block(ForEach(), {"items": items}) == []


async def test_for_each_refuses_what_is_not_a_collection() -> None:
    with pytest.raises(BlockError, match="invalid JSON"):
        await run_block(ForEach(), {"items": "a, b"})
    with pytest.raises(BlockError, match="must be an object or a list"):
        await run_block(ForEach(), {"items": "42"})
    with pytest.raises(InvalidBlockInput) as info:
        ForEach().validate_input({"items": 42})
    assert set(info.value.errors) == {"items"}


# JsonParse and JsonStringify


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"a": [1, 2.5, true, null]}', {"a": [1, 2.5, True, None]}),
        ("  42 ", 42),
        ('"hi"', "hi"),
    ],
)
async def test_json_parse(text: str, expected: object) -> None:
    assert await run_block(JsonParse(), {"text": text}) == [("result", expected)]


@pytest.mark.parametrize("text", ["{'a': 1}", "", "[1,", "NaN", "[" * 5000 + "]" * 5000])
async def test_json_parse_invalid_json_is_a_block_error(text: str) -> None:
    with pytest.raises(BlockError, match="invalid JSON"):
        await run_block(JsonParse(), {"text": text})


async def test_json_parse_keeps_huge_integers_sendable() -> None:
    [(pin, value)] = await run_block(JsonParse(), {"text": str(2**70)})
    assert pin == "result" and value == float(2**70)


async def test_json_stringify() -> None:
    value = {"b": 1, "a": ["é", None]}
    [(pin, text)] = await run_block(JsonStringify(), {"value": value})
    assert pin == "text" and "\n" not in text and json.loads(text) == value
    assert "é" in text
    [(_, text)] = await run_block(JsonStringify(), {"value": value, "indent": 2, "sort_keys": True})
    assert text == json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)
    assert text.index('"a"') < text.index('"b"')
    assert await run_block(JsonStringify(), {"value": None}) == [("text", "null")]


def test_json_stringify_refuses_a_silly_indent() -> None:
    with pytest.raises(InvalidBlockInput) as info:
        JsonStringify().validate_input({"value": 1, "indent": 10_000})
    assert set(info.value.errors) == {"indent"}


# CountItems


@pytest.mark.parametrize(
    ("collection", "count"), [([1, 2, 3], 3), ({"a": 1}, 1), ("héllo", 5), ([], 0), ("", 0)]
)
async def test_count_items(collection: object, count: int) -> None:
    assert await run_block(CountItems(), {"collection": collection}) == [("count", count)]


def test_count_items_refuses_a_number() -> None:
    with pytest.raises(InvalidBlockInput) as info:
        CountItems().validate_input({"collection": 5})
    assert set(info.value.errors) == {"collection"}
