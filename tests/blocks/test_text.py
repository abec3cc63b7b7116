"""The text blocks, run directly."""

from __future__ import annotations

import pytest

from app.blocks.base import Block, BlockError, InvalidBlockInput
from app.blocks.text import ExtractText, JoinText, MatchTextPattern, SplitText, TextTemplate
from tests.blocks.conftest import run_block


@pytest.mark.parametrize(
    ("block", "inputs", "outputs"),
    [
        (TextTemplate(), {"format", "values"}, {"output"}),
        (
            MatchTextPattern(),
            {"text", "match", "data", "case_sensitive", "dot_all"},
            {"positive", "negative"},
        ),
        (
            ExtractText(),
            {"text", "pattern", "group", "case_sensitive", "dot_all", "find_all"},
            {"positive", "negative"},
        ),
        (SplitText(), {"text", "delimiter", "strip"}, {"texts"}),
        (JoinText(), {"input", "delimiter"}, {"output"}),
    ],
)
def test_schemas_list_exactly_the_declared_pins(
    block: Block, inputs: set[str], outputs: set[str]
) -> None:
    assert set(block.input_schema()["properties"]) == inputs
    assert set(block.output_schema()["properties"]) == outputs | {"error"}
    assert all(p.get("description") for p in block.input_schema()["properties"].values())


# TextTemplate


async def test_template_fills_placeholders_with_or_without_spaces() -> None:
    outputs = await run_block(
        TextTemplate(),
        {
            "format": "Hi {{name}}, {{ greeting }}!",
            "values": {"name": "Ada", "greeting": "welcome"},
        },
    )
    assert outputs == [("output", "Hi Ada, welcome!")]


async def test_template_reads_dotted_paths_into_nested_values() -> None:
    values = {"user": {"name": "Ada", "tags": ["x", "y"]}}
    outputs = await run_block(
        TextTemplate(), {"format": "{{user.name}} / {{ user.tags.1 }}", "values": values}
    )
    assert outputs == [("output", "Ada / y")]


async def test_template_prefers_a_key_containing_dots() -> None:
    values = {"a.b": "whole", "a": {"b": "path"}}
    outputs = await run_block(TextTemplate(), {"format": "{{a.b}}", "values": values})
    assert outputs == [("output", "whole")]


async def test_template_renders_objects_as_json_and_scalars_as_text() -> None:
    values = {"obj": {"k": "é"}, "items": [1, 2], "n": 3, "f": 1.5, "b": True, "none": None}
    fmt = "{{obj}}|{{items}}|{{n}}|{{f}}|{{b}}|{{none}}"
    outputs = await run_block(TextTemplate(), {"format": fmt, "values": values})
    assert outputs == [("output", '{"k": "é"}|[1, 2]|3|1.5|True|None')]


async def test_template_missing_key_names_it() -> None:
    with pytest.raises(BlockError, match=r"'user\.email'"):
        await run_block(
            TextTemplate(), {"format": "{{user.email}}", "values": {"user": {"name": "Ada"}}}
        )
    with pytest.raises(BlockError, match="'missing'"):
        await run_block(TextTemplate(), {"format": "a {{ missing }} b"})


async def test_template_does_not_expand_placeholders_inside_values() -> None:
    values = {"a": "{{b}}", "b": "no"}
    outputs = await run_block(TextTemplate(), {"format": "{{a}}", "values": values})
    assert outputs == [("output", "{{b}}")]


async def test_template_without_placeholders_is_unchanged() -> None:
    assert await run_block(TextTemplate(), {"format": "plain {text}"}) == [
        ("output", "plain {text}")
    ]


def test_template_refuses_bad_pins() -> None:
    with pytest.raises(InvalidBlockInput) as info:
        TextTemplate().validate_input({"format": "x", "values": [1], "extra": 1})
    assert set(info.value.errors) == {"values", "extra"}
    assert info.value.errors["extra"] == "no such input pin"
    with pytest.raises(InvalidBlockInput) as info:
        TextTemplate().validate_input({})
    assert "format" in info.value.errors


# MatchTextPattern


async def test_match_passes_the_text_on_positive_when_found() -> None:
    outputs = await run_block(MatchTextPattern(), {"text": "order #42 shipped", "match": r"#\d+"})
    assert outputs == [("positive", "order #42 shipped")]


async def test_match_passes_data_on_negative_when_not_found() -> None:
    outputs = await run_block(
        MatchTextPattern(), {"text": "nothing here", "match": r"\d", "data": {"id": 1}}
    )
    assert outputs == [("negative", {"id": 1})]


async def test_match_case_and_dot_all_flags() -> None:
    base = {"text": "Hello\nWorld", "data": "d"}
    assert await run_block(MatchTextPattern(), {**base, "match": "hello"}) == [("negative", "d")]
    assert await run_block(
        MatchTextPattern(), {**base, "match": "hello", "case_sensitive": False}
    ) == [("positive", "d")]
    assert await run_block(MatchTextPattern(), {**base, "match": "o.W"}) == [("positive", "d")]
    assert await run_block(MatchTextPattern(), {**base, "match": "o.W", "dot_all": False}) == [
        ("negative", "d")
    ]


async def test_match_takes_a_number_as_text() -> None:
    assert await run_block(MatchTextPattern(), {"text": 1234, "match": "^12"}) == [
        ("positive", "1234")
    ]


async def test_match_invalid_regex_is_a_block_error() -> None:
    with pytest.raises(BlockError, match="invalid regular expression"):
        await run_block(MatchTextPattern(), {"text": "x", "match": "(unclosed"})


# ExtractText


async def test_extract_whole_match_and_group() -> None:
    text = "name: Ada, name: Grace"
    assert await run_block(ExtractText(), {"text": text, "pattern": r"name: \w+"}) == [
        ("positive", "name: Ada")
    ]
    assert await run_block(
        ExtractText(), {"text": text, "pattern": r"name: (\w+)", "group": 1}
    ) == [("positive", "Ada")]


async def test_extract_find_all_yields_once_per_match_in_order() -> None:
    outputs = await run_block(
        ExtractText(),
        {"text": "a1 b22 c333", "pattern": r"[a-z](\d+)", "group": 1, "find_all": True},
    )
    assert outputs == [("positive", "1"), ("positive", "22"), ("positive", "333")]


async def test_extract_no_match_passes_the_text_on_negative() -> None:
    for find_all in (False, True):
        outputs = await run_block(
            ExtractText(), {"text": "no digits", "pattern": r"\d+", "find_all": find_all}
        )
        assert outputs == [("negative", "no digits")]


async def test_extract_case_insensitive_and_unmatched_optional_group() -> None:
    outputs = await run_block(
        ExtractText(),
        {"text": "ABC", "pattern": "(x)?abc", "group": 1, "case_sensitive": False},
    )
    assert outputs == [("positive", "")]


async def test_extract_group_out_of_range_is_a_block_error() -> None:
    with pytest.raises(BlockError, match="group 2"):
        await run_block(ExtractText(), {"text": "ab", "pattern": "(a)b", "group": 2})


async def test_extract_invalid_regex_is_a_block_error() -> None:
    with pytest.raises(BlockError, match="invalid regular expression"):
        await run_block(ExtractText(), {"text": "x", "pattern": "[a-"})


def test_extract_refuses_a_negative_group() -> None:
    with pytest.raises(InvalidBlockInput) as info:
        ExtractText().validate_input({"text": "x", "pattern": "x", "group": -1})
    assert set(info.value.errors) == {"group"}


# SplitText and JoinText


async def test_split_strips_parts_by_default() -> None:
    assert await run_block(SplitText(), {"text": " a, b ,c,"}) == [("texts", ["a", "b", "c", ""])]


async def test_split_with_delimiter_and_without_strip() -> None:
    outputs = await run_block(SplitText(), {"text": "a | b", "delimiter": "|", "strip": False})
    assert outputs == [("texts", ["a ", " b"])]


async def test_split_empty_text_gives_no_parts() -> None:
    assert await run_block(SplitText(), {"text": ""}) == [("texts", [])]


def test_split_refuses_an_empty_delimiter() -> None:
    with pytest.raises(InvalidBlockInput) as info:
        SplitText().validate_input({"text": "abc", "delimiter": ""})
    assert set(info.value.errors) == {"delimiter"}


async def test_join_converts_items_to_text() -> None:
    outputs = await run_block(JoinText(), {"input": ["a", 1, 2.5, True], "delimiter": ", "})
    assert outputs == [("output", "a, 1, 2.5, True")]
    assert await run_block(JoinText(), {"input": ["x", "y"]}) == [("output", "xy")]
    assert await run_block(JoinText(), {"input": []}) == [("output", "")]


def test_join_refuses_a_non_list() -> None:
    with pytest.raises(InvalidBlockInput) as info:
        JoinText().validate_input({"input": "abc"})
    assert set(info.value.errors) == {"input"}
