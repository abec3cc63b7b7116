"""Blocks that build, test, cut up and join text."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from pydantic import ConfigDict, Field

from app.blocks.base import (
    Block,
    BlockCategory,
    BlockError,
    BlockInput,
    BlockOutput,
    BlockRunContext,
)
from app.blocks.compute import compile_pattern, find_all, search

# Linear time: the key is stripped in code. `\{\{\s*([^{}]*?)\s*\}\}` backtracked
# cubically on an unclosed "{{" followed by spaces (2,000 of them held a worker's
# event loop for 35 s; the format is user text).
_PLACEHOLDER = re.compile(r"\{\{([^{}]*)\}\}")

# Text a block builds from its inputs multiplies them (a 500 KB value named by
# 100,000 placeholders is 50 GB): past this many characters the node fails
# before the text is built, instead of the worker running out of memory (and
# every worker that resumes the run after it).
MAX_TEXT_CHARS = 10_000_000


def _too_long(what: str) -> BlockError:
    return BlockError(f"{what} would be longer than {MAX_TEXT_CHARS:,} characters")


def _fill(format: str, values: dict[str, Any]) -> str:
    pieces: list[str] = []
    length = 0
    position = 0
    for match in _PLACEHOLDER.finditer(format):
        value = _as_text(_lookup(values, match.group(1).strip()))
        length += match.start() - position + len(value)
        if length > MAX_TEXT_CHARS:
            raise _too_long("the filled text")
        pieces += (format[position : match.start()], value)
        position = match.end()
    pieces.append(format[position:])
    return "".join(pieces)


class _TextInput(BlockInput):
    # A number linked into a text pin is what the user means as text; dicts and lists
    # are still refused, since their text form is a choice the user should make.
    model_config = ConfigDict(coerce_numbers_to_str=True)


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _lookup(values: dict[str, Any], key: str) -> Any:
    # A key that itself contains dots wins over reading it as a path.
    if key in values:
        return values[key]
    current: Any = values
    for part in key.split("."):
        if isinstance(current, dict) and part in current:
            current = current[part]
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            raise BlockError(f"no value for placeholder {key!r} in values")
    return current


class TextTemplate(Block):
    id = uuid.UUID("50cede0f-f8ba-49b3-9396-965d9099d89c")
    name = "TextTemplate"
    description = (
        "Fills the `{{key}}` placeholders of `format` from `values` and yields the text on "
        "`output`. Dotted keys such as `{{user.name}}` look into nested objects; objects and "
        "lists are written as JSON, other values as text. A missing key is an error."
    )
    categories = (BlockCategory.TEXT,)

    class Input(BlockInput):
        format: str = Field(description="The text, with `{{key}}` placeholders to fill.")
        values: dict[str, Any] = Field(default={}, description="The values the placeholders name.")

    class Output(BlockOutput):
        output: str = Field(description="The text with every placeholder filled.")

    async def run(self, input: Input, context: BlockRunContext):
        # One pass: text coming from a value is never read as a placeholder itself.
        yield "output", _fill(input.format, input.values)


class MatchTextPattern(Block):
    id = uuid.UUID("4b064e59-fa25-44d8-b69f-06de7acc6e95")
    name = "MatchTextPattern"
    description = (
        "Searches `text` for the regular expression `match` and passes `data` (the text when "
        "not given) on `positive` when it matches anywhere, on `negative` otherwise."
    )
    categories = (BlockCategory.TEXT, BlockCategory.LOGIC)

    class Input(_TextInput):
        text: str = Field(description="The text to search.")
        match: str = Field(
            description="A regular expression (Python syntax), at most 2 s of matching."
        )
        data: Any = Field(default=None, description="The value to pass on; the text when null.")
        case_sensitive: bool = Field(default=True, description="Whether case must match.")
        dot_all: bool = Field(default=True, description="Whether `.` also matches newlines.")

    class Output(BlockOutput):
        positive: Any = Field(description="The data, when the pattern matches.")
        negative: Any = Field(description="The data, when it does not.")

    async def run(self, input: Input, context: BlockRunContext):
        pattern = compile_pattern(input.match, input.case_sensitive, input.dot_all)
        data = input.text if input.data is None else input.data
        found = await search(pattern, input.text)
        yield ("positive" if found else "negative"), data


class ExtractText(Block):
    id = uuid.UUID("2cd0d9df-6e26-429f-b39c-4dd20c919f65")
    name = "ExtractText"
    description = (
        "Finds the regular expression `pattern` in `text` and yields capture group `group` "
        "(0 for the whole match) on `positive`: the first match, or with `find_all` one value "
        "per match. When nothing matches, the text is passed on on `negative`."
    )
    categories = (BlockCategory.TEXT,)

    class Input(_TextInput):
        text: str = Field(description="The text to search.")
        pattern: str = Field(
            description="A regular expression (Python syntax), at most 2 s of matching."
        )
        group: int = Field(default=0, ge=0, description="The capture group; 0 is the match.")
        case_sensitive: bool = Field(default=True, description="Whether case must match.")
        dot_all: bool = Field(default=True, description="Whether `.` also matches newlines.")
        find_all: bool = Field(default=False, description="Yield every match, not the first.")

    class Output(BlockOutput):
        positive: str = Field(description="The group's text, once per match yielded.")
        negative: str = Field(description="The input text, when nothing matched.")

    async def run(self, input: Input, context: BlockRunContext):
        pattern = compile_pattern(input.pattern, input.case_sensitive, input.dot_all)
        if input.group > pattern.groups:
            raise BlockError(
                f"group {input.group} does not exist: the pattern has {pattern.groups} group(s)"
            )
        if input.find_all:
            matches = await find_all(pattern, input.text)
        else:
            first = await search(pattern, input.text)
            matches = [first] if first else []
        if not matches:
            yield "negative", input.text
        for match in matches:
            # A group that took no part in the match (e.g. `(a)?`) reads as empty text.
            yield "positive", match.group(input.group) or ""


class SplitText(Block):
    id = uuid.UUID("735e5115-59ea-4d80-bf52-e654e36a1614")
    name = "SplitText"
    description = (
        "Splits `text` at every `delimiter` and yields the parts as a list on `texts`, each "
        "stripped of surrounding whitespace unless `strip` is false. Empty text gives []."
    )
    categories = (BlockCategory.TEXT,)

    class Input(_TextInput):
        text: str = Field(description="The text to split.")
        delimiter: str = Field(default=",", min_length=1, description="Where to split.")
        strip: bool = Field(default=True, description="Strip whitespace around each part.")

    class Output(BlockOutput):
        texts: list[str] = Field(description="The parts, in order.")

    async def run(self, input: Input, context: BlockRunContext):
        # "".split(",") is [""]; nothing to split should give no parts.
        parts = input.text.split(input.delimiter) if input.text else []
        yield "texts", [part.strip() for part in parts] if input.strip else parts


class JoinText(Block):
    id = uuid.UUID("0880d56f-89b3-4594-8b27-087fb237077d")
    name = "JoinText"
    description = (
        "Joins the items of `input` into one text on `output`, with `delimiter` between "
        "them; items that are not text are converted with str()."
    )
    categories = (BlockCategory.TEXT,)

    class Input(BlockInput):
        input: list[Any] = Field(description="The items to join.")
        delimiter: str = Field(default="", description="Put between items.")

    class Output(BlockOutput):
        output: str = Field(description="The joined text.")

    async def run(self, input: Input, context: BlockRunContext):
        parts = [str(item) for item in input.input]
        length = sum(map(len, parts)) + len(input.delimiter) * max(len(parts) - 1, 0)
        if length > MAX_TEXT_CHARS:
            raise _too_long("the joined text")
        yield "output", input.delimiter.join(parts)
