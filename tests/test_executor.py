"""The executor's shortcuts (schema/executor.py, issue 14): a field that only
reads an attribute is read directly and answers exactly what strawberry's
resolver answered, errors included; and a request's objects (its context,
loaders and rows) are freed when it ends, not by a full collection."""

from __future__ import annotations

import enum
import gc
import weakref
from typing import Any

import strawberry
from strawberry.permission import BasePermission

from schema.executor import PLAIN_LEAF, AgentGraphExecutor, mark_plain_leaves


@strawberry.enum
class Colour(enum.Enum):
    RED = "red"


class Refuse(BasePermission):
    message = "refused"

    def has_permission(self, source: Any, info: Any, **kwargs: Any) -> bool:
        return False


@strawberry.type
class Item:
    name: str
    nickname: str | None
    count: int
    colour: Colour
    tags: list[str]
    secret: str | None = strawberry.field(default="s", permission_classes=[Refuse])

    @strawberry.field
    def shout(self) -> str:
        return self.name.upper()


class Bare:
    """Not an Item, as records are not: only some of its attributes."""

    name = "bare"
    count = 3


def items() -> list[Any]:
    return [
        Item(name="a", nickname=None, count=1, colour=Colour.RED, tags=["x"]),
        Item(name=None, nickname="n", count=2, colour=Colour.RED, tags=[]),  # type: ignore[arg-type]
        Item(name="c", nickname="n", count="many", colour="blue", tags=[]),  # type: ignore[arg-type]
        Bare(),
    ]


@strawberry.type
class Query:
    @strawberry.field
    def items(self) -> list[Item | None]:
        return items()

    @strawberry.field
    def first(self) -> Item | None:
        return items()[1]

    @strawberry.field
    async def fine(self) -> list[Item]:
        return items()[:1] * 3


def schema(marked: bool) -> strawberry.Schema:
    built = strawberry.Schema(query=Query, execution_context_class=AgentGraphExecutor)
    if marked:
        mark_plain_leaves(built)
    return built


def test_only_attribute_leaves_are_marked():
    fields = schema(True)._schema.type_map["Item"].fields  # type: ignore[union-attr]
    marked = {name for name, field in fields.items() if getattr(field, PLAIN_LEAF, None)}
    # Not a list, not a field behind a permission, not a resolver.
    assert marked == {"name", "nickname", "count", "colour"}


async def test_read_directly_as_strawberry_resolves():
    query = "{ items { name nickname count colour tags secret shout } first { count name } }"
    direct, resolved = [await schema(marked).execute(query) for marked in (True, False)]
    assert direct.data == resolved.data
    assert direct.data is not None and direct.data["items"][0] == {
        "name": "a",
        "nickname": None,
        "count": 1,
        "colour": "RED",
        "tags": ["x"],
        "secret": None,
        "shout": "A",
    }
    assert direct.data["first"] is None  # a null name, non-null: up to the nullable parent

    def errors(result: Any) -> list[tuple[str, list]]:
        return sorted((e.message, e.path) for e in result.errors)

    assert errors(direct) == errors(resolved)
    messages = {message for message, _ in errors(direct)}
    assert "Cannot return null for non-nullable field Item.name." in messages
    assert any("cannot represent non-integer value" in m for m in messages)
    assert any("'Bare' object has no attribute 'nickname'" in m for m in messages)


async def test_a_request_is_freed_without_the_collector():
    class Context:
        pass

    built = schema(True)
    context = Context()
    freed = weakref.ref(context)
    gc.collect()
    gc.disable()
    try:
        # An error keeps its frames (a traceback) until it is collected: this
        # one has none, as most requests.
        query = "{ fine { name shout colour } }"
        result = await built.execute(query, context_value=context)
        assert result.data is not None and not result.errors
        del context, result
        assert freed() is None
    finally:
        gc.enable()
