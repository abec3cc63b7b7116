"""Blocks that build, read and convert structured data: objects, lists and JSON."""

from __future__ import annotations

import json
import uuid
from typing import Any

import orjson
from pydantic import Field, field_validator

from app.blocks.base import (
    Block,
    BlockCategory,
    BlockError,
    BlockInput,
    BlockOutput,
    BlockRunContext,
)
from app.storable import first_unstorable

# A pin named `list` shadows the builtin in the rest of its model's body, so the type is
# named here.
AnyList = list[Any]
_MISSING = object()


def _parse_json(text: str) -> Any:
    # orjson rather than json: it refuses NaN/Infinity and turns integers too big for
    # 64 bits into floats. What it still takes but cannot store or send on again
    # (U+0000, nesting past its own encoder's limit) is refused here.
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise BlockError(f"invalid JSON: {exc}") from None
    unstorable = first_unstorable(value)
    if unstorable is not None:
        problem, path = unstorable
        raise BlockError(f"unusable JSON: {problem} ({path})")
    return value


def _collection(value: Any, pin: str) -> dict[str, Any] | list[Any]:
    """`value` as an object or list, parsing it first when it is JSON text."""
    parsed = _parse_json(value) if isinstance(value, str) else value
    if not isinstance(parsed, dict | list):
        raise BlockError(f"{pin} must be an object or a list (or JSON text of one)")
    return parsed


def _step(current: Any, key: str | int) -> Any:
    if isinstance(current, dict):
        # JSON object keys are always text, so an index-like key 0 means "0".
        return current.get(str(key), _MISSING)
    if isinstance(current, list):
        try:
            index = int(key)
        except ValueError:
            return _MISSING
        return current[index] if -len(current) <= index < len(current) else _MISSING
    return _MISSING


def _find(data: dict[str, Any] | list[Any], key: str | int) -> Any:
    # The key as a whole first: {"a.b": 1} is found by "a.b" before it is read as a path.
    found = _step(data, key)
    if found is not _MISSING or not isinstance(key, str) or "." not in key:
        return found
    current: Any = data
    for part in key.split("."):
        current = _step(current, part)
        if current is _MISSING:
            break
    return current


class FindInDictionary(Block):
    id = uuid.UUID("4ed1827d-db5c-42eb-a206-9663e982ada0")
    name = "FindInDictionary"
    description = (
        "Looks `key` up in `input` (an object, a list, or JSON text of one) and yields the "
        "value on `output`, or the input unchanged on `missing` when it is absent. A list "
        "takes an index (negative counts from the end); a dotted key like `a.b.0` walks into "
        "nested objects and lists."
    )
    categories = (BlockCategory.DATA,)

    class Input(BlockInput):
        input: Any = Field(description="An object, a list, or JSON text of one.")
        key: str | int = Field(description="The key, list index, or dotted path to look up.")

    class Output(BlockOutput):
        output: Any = Field(description="The value found.")
        missing: Any = Field(description="The input, when the key is absent.")

    async def run(self, input: Input, context: BlockRunContext):
        found = _find(_collection(input.input, "input"), input.key)
        if found is _MISSING:
            yield "missing", input.input
        else:
            yield "output", found


class CreateDictionary(Block):
    id = uuid.UUID("75de631a-2406-48f2-883a-5518c2ee0e22")
    name = "CreateDictionary"
    description = "Yields the object `values` on `dictionary`."
    categories = (BlockCategory.DATA,)

    class Input(BlockInput):
        values: dict[str, Any] = Field(default={}, description="The object's keys and values.")

    class Output(BlockOutput):
        dictionary: dict[str, Any] = Field(description="The object.")

    async def run(self, input: Input, context: BlockRunContext):
        yield "dictionary", dict(input.values)


class CreateList(Block):
    id = uuid.UUID("b69b799a-b831-4e71-88b6-f19acfbf8422")
    name = "CreateList"
    description = (
        "Yields the list `values` on `list`; a single value that is not a list becomes a "
        "one-item list."
    )
    categories = (BlockCategory.DATA,)

    class Input(BlockInput):
        values: AnyList = Field(
            default=[], description="The list's items; a single value is wrapped."
        )

        @field_validator("values", mode="before")
        @classmethod
        def _wrap_single_value(cls, value: Any) -> Any:
            # A link from a pin carrying one value (e.g. StoreValue) should still work.
            return value if isinstance(value, list) else [value]

    class Output(BlockOutput):
        list: AnyList = Field(description="The list.")

    async def run(self, input: Input, context: BlockRunContext):
        yield "list", list(input.values)


class AddToList(Block):
    id = uuid.UUID("acb0c040-5473-4471-acc4-79ffb00fbaf4")
    name = "AddToList"
    description = (
        "Yields a copy of `list` on `updated_list` with `entry` (when not null) followed by "
        "`entries` inserted at `position`, or appended when `position` is null. A position "
        "past the end appends. The input list is never changed."
    )
    categories = (BlockCategory.DATA,)

    class Input(BlockInput):
        list: AnyList = Field(default=[], description="The list to add to.")
        entry: Any = Field(default=None, description="One value to add; null adds nothing.")
        entries: AnyList = Field(default=[], description="Values to add, in order.")
        position: int | None = Field(
            default=None, ge=0, description="Index to insert at (0 is the front); null appends."
        )

    class Output(BlockOutput):
        updated_list: AnyList = Field(description="A new list with the values added.")

    async def run(self, input: Input, context: BlockRunContext):
        added = ([] if input.entry is None else [input.entry]) + input.entries
        updated = list(input.list)
        position = len(updated) if input.position is None else input.position
        updated[position:position] = added
        yield "updated_list", updated


class ForEach(Block):
    id = uuid.UUID("bfc102db-c308-47da-937d-60a6440ef4d2")
    name = "ForEach"
    description = (
        "Yields each element of `items` (a list, an object, or JSON text of one) in order: "
        "the element on `item` and its index (lists) or key (objects) on `key`, so every "
        "node linked to them runs once per element. An empty collection yields nothing."
    )
    categories = (BlockCategory.DATA, BlockCategory.LOGIC)
    yields_many = True

    class Input(BlockInput):
        items: AnyList | dict[str, Any] | str = Field(
            description="A list, an object, or JSON text of one."
        )

    class Output(BlockOutput):
        item: Any = Field(description="One element, once per element.")
        key: int | str = Field(description="The element's list index or object key.")

    async def run(self, input: Input, context: BlockRunContext):
        items = _collection(input.items, "items")
        pairs = items.items() if isinstance(items, dict) else enumerate(items)
        for key, item in pairs:
            yield "item", item
            yield "key", key


class JsonParse(Block):
    id = uuid.UUID("56c0c36d-ce5d-4032-a693-f2383bda8551")
    name = "JsonParse"
    description = "Parses the JSON `text` and yields the value on `result`."
    categories = (BlockCategory.DATA, BlockCategory.TEXT)

    class Input(BlockInput):
        text: str = Field(description="JSON text.")

    class Output(BlockOutput):
        result: Any = Field(description="The parsed value.")

    async def run(self, input: Input, context: BlockRunContext):
        yield "result", _parse_json(input.text)


class JsonStringify(Block):
    id = uuid.UUID("1f57e4d2-fef2-415c-9810-4b8d48898beb")
    name = "JsonStringify"
    description = (
        "Writes `value` as JSON text on `text`: on one line when `indent` is null, otherwise "
        "indented by that many spaces, with object keys sorted when `sort_keys` is set."
    )
    categories = (BlockCategory.DATA, BlockCategory.TEXT)

    class Input(BlockInput):
        value: Any = Field(description="The value to write.")
        # A huge indent would make a huge text out of a small value.
        indent: int | None = Field(
            default=None, ge=0, le=16, description="Spaces per level (0-16); null for one line."
        )
        sort_keys: bool = Field(default=False, description="Sort object keys.")

    class Output(BlockOutput):
        text: str = Field(description="The JSON text.")

    async def run(self, input: Input, context: BlockRunContext):
        yield (
            "text",
            json.dumps(
                input.value, indent=input.indent, sort_keys=input.sort_keys, ensure_ascii=False
            ),
        )


class CountItems(Block):
    id = uuid.UUID("60cf173e-c4b3-46ee-bacd-0239f1220119")
    name = "CountItems"
    description = (
        "Yields on `count` how many items a list has, how many keys an object has, or how "
        "many characters a text has."
    )
    categories = (BlockCategory.DATA,)

    class Input(BlockInput):
        collection: AnyList | dict[str, Any] | str = Field(
            description="A list, an object, or a text."
        )

    class Output(BlockOutput):
        count: int = Field(description="The number of items, keys or characters.")

    async def run(self, input: Input, context: BlockRunContext):
        yield "count", len(input.collection)
