"""The outline of a GraphQL document: its operations, fragments and selection
sets, read from the query text before graphql-core parses it.

graphql-core's parser is pure Python (~7 µs a token here), so a hostile
document near the token limit costs ~35 ms to parse before any limit can be
checked on its AST, and far more to validate. The outline is read with one
compiled regular expression (C speed) and a small loop that records only
what the limits need (response keys, field names, `first` arguments,
fragment spreads, nesting), so a document that breaks a limit is refused in
a millisecond or two. Selection sets that break the per-set limits are
refused while they are read, before the rest of the text is looked at.

The reader is not a parser: whatever it does not recognise (an unterminated
string, a stray character, a type definition) makes it give up and return
None; graphql-core then parses the text (bounded by the token limit) and the
outline is taken from the AST instead (`outline_of_ast`). Both give the same
outline for every executable document, which tests/test_document_outline.py
checks on a corpus.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from itertools import islice

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    VariableNode,
)

from app.errors import AppError, ErrorCode

# One token per match (group 1); whitespace, commas and comments before it are
# skipped. Unterminated strings match no group: they swallow the rest of their
# line (block strings, of the text) so that a failed match is never retried
# from every later quote, which would make hostile quoting quadratic. A
# comment at the very end, and the end itself, match the empty group 2.
_TOKEN = re.compile(
    r"""(?:[ \t\n\r,\ufeff]|\#[^\n\r]*)*+
    (?:
        (
            \"\"\"(?:\\\"\"\"|[^"\\]|\\|"(?!""))*+\"\"\"   # block string
          | "(?:[^"\\\n\r]|\\.)*+"                         # string
          | \.\.\.
          | [!$&():=@\[\]{|}]
          | [_A-Za-z][_0-9A-Za-z]*
          | -?[0-9][0-9A-Za-z_.+-]*
          | [^ \t\n\r,\ufeff"]
        )
      | \"\"\"[\s\S]*                                 # unterminated block string
      | "[^\n\r]*                                      # unterminated string
      | (\Z)
    )""",
    re.VERBOSE,
)
_INTEGER = re.compile(r"-?(?:0|[1-9][0-9]*)")
# Literal selection sets nested deeper than this (inline fragments included)
# are refused: the depth limit allows 12 field levels.
MAX_NESTING = 64


class QueryTooComplex(AppError):
    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.QUERY_TOO_COMPLEX, message)


@dataclass(slots=True)
class Field:
    key: str  # the response key: the alias, else the name
    name: str
    aliased: bool
    # The `first` argument: an int literal, a variable name ("$n"), "?" for
    # any other value, None when absent.
    first: int | str | None
    selections: Selections | None


@dataclass(slots=True)
class Selections:
    """One selection set as written: its fields, inline fragments and spreads."""

    fields: list[Field] = field(default_factory=list)
    inline_fragments: list[Selections] = field(default_factory=list)
    spreads: list[str] = field(default_factory=list)
    # The type condition of an inline fragment or fragment definition.
    on_type: str | None = None


@dataclass(slots=True)
class Operation:
    kind: str  # query, mutation, subscription
    name: str | None
    selections: Selections
    variables: int = 0  # how many variables it defines


@dataclass(slots=True)
class Outline:
    operations: list[Operation]
    fragments: dict[str, Selections]


@dataclass(frozen=True, slots=True)
class SetLimits:
    """The limits a single selection set can break as it is read."""

    max_tokens: int
    max_fields_per_set: int
    max_repeated_fields: int


def too_many_fields(limit: int) -> QueryTooComplex:
    return QueryTooComplex(
        f"A selection set has more than {limit} selections (its fragments' included)"
    )


def too_many_repeats(key: str, limit: int) -> QueryTooComplex:
    return QueryTooComplex(f"Field {key!r} appears more than {limit} times in one selection set")


def too_many_tokens(limit: int) -> QueryTooComplex:
    return QueryTooComplex(f"Document contains more than {limit} tokens")


def _is_name(token: str) -> bool:
    first = token[0]
    return first == "_" or ("A" <= first <= "Z") or ("a" <= first <= "z")


def read_outline(text: str, limits: SetLimits) -> Outline | None:
    """The outline of `text`, None when the reader is unsure of it. Raises
    QueryTooComplex for too many tokens or a selection set over its limits."""
    matches = list(islice(_TOKEN.finditer(text), limits.max_tokens + 3))
    tokens = [m.group(1) for m in matches]
    while matches and matches[-1].group(2) is not None:
        matches.pop()  # the end of the text (after a comment, or empty)
        tokens.pop()
    if len(tokens) > limits.max_tokens:
        raise too_many_tokens(limits.max_tokens)
    if None in tokens:
        return None  # an unterminated string: graphql-core says where
    return _Reader(tokens, limits).outline()


class _Reader:
    def __init__(self, tokens: list[str], limits: SetLimits) -> None:
        self.tokens = tokens
        self.limits = limits
        self.i = 0
        # Per open selection set: how often each response key occurs in it.
        self.stack: list[tuple[Selections, dict[str, int]]] = []

    def outline(self) -> Outline | None:
        tokens, n = self.tokens, len(self.tokens)
        operations: list[Operation] = []
        fragments: dict[str, Selections] = {}
        while self.i < n:
            if self.stack:
                if not self._selection():
                    return None
                continue
            token = tokens[self.i]
            if token == "{":
                operations.append(Operation("query", None, self._open(None)))
            elif token in ("query", "mutation", "subscription"):
                self.i += 1
                name = None
                if self.i < n and _is_name(tokens[self.i]):
                    name = tokens[self.i]
                    self.i += 1
                variables = 0
                if self._peek() == "(":
                    start = self.i
                    if not self._arguments()[0]:
                        return None
                    variables = tokens[start : self.i].count("$")
                if not self._directives() or self._peek() != "{":
                    return None
                operations.append(Operation(token, name, self._open(None), variables))
            elif token == "fragment":
                if self.i + 3 >= n or tokens[self.i + 2] != "on":
                    return None
                name, on_type = tokens[self.i + 1], tokens[self.i + 3]
                if not (_is_name(name) and _is_name(on_type)) or name in fragments:
                    return None
                self.i += 4
                if not self._directives() or self._peek() != "{":
                    return None
                fragments[name] = self._open(on_type)
            else:
                return None
        return None if self.stack else Outline(operations, fragments)

    def _peek(self) -> str | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def _open(self, on_type: str | None) -> Selections:
        """Enter the selection set at `{`."""
        if len(self.stack) >= MAX_NESTING:
            raise QueryTooComplex(f"Selection sets nest more than {MAX_NESTING} deep")
        selections = Selections(on_type=on_type)
        self.stack.append((selections, {}))
        self.i += 1
        return selections

    def _selection(self) -> bool:
        """One selection (or the closing brace) of the innermost open set."""
        tokens, n = self.tokens, len(self.tokens)
        token = tokens[self.i]
        current, keys = self.stack[-1]
        if token == "}":
            self.stack.pop()
            self.i += 1
            return True
        if token == "...":
            self.i += 1
            following = self._peek()
            if following is None:
                return False
            if following == "on" or following in ("@", "{"):
                on_type = None
                if following == "on":
                    if self.i + 1 >= n or not _is_name(tokens[self.i + 1]):
                        return False
                    on_type = tokens[self.i + 1]
                    self.i += 2
                if not self._directives() or self._peek() != "{":
                    return False
                self._count(current, keys, None)
                current.inline_fragments.append(self._open(on_type))
                return True
            if not _is_name(following):
                return False
            self._count(current, keys, None)
            current.spreads.append(following)
            self.i += 1
            return self._directives()
        if not _is_name(token):
            return False
        key = name = token
        aliased = False
        self.i += 1
        if self._peek() == ":":
            if self.i + 1 >= n or not _is_name(tokens[self.i + 1]):
                return False
            name = tokens[self.i + 1]
            aliased = True
            self.i += 2
        first = None
        if self._peek() == "(":
            closed, first = self._arguments()
            if not closed:
                return False
        if not self._directives():
            return False
        self._count(current, keys, key)
        selections = self._open(None) if self._peek() == "{" else None
        current.fields.append(Field(key, name, aliased, first, selections))
        return True

    def _count(self, current: Selections, keys: dict[str, int], key: str | None) -> None:
        """Refuse a set over its limits as soon as it is: what is written in one
        set is a lower bound of what it holds once its fragments are counted."""
        limits = self.limits
        held = len(current.fields) + len(current.spreads) + len(current.inline_fragments)
        if held >= limits.max_fields_per_set:
            raise too_many_fields(limits.max_fields_per_set)
        if key is not None:
            seen = keys[key] = keys.get(key, 0) + 1
            if seen > limits.max_repeated_fields:
                raise too_many_repeats(key, limits.max_repeated_fields)

    def _directives(self) -> bool:
        while self._peek() == "@":
            if self.i + 1 >= len(self.tokens) or not _is_name(self.tokens[self.i + 1]):
                return False
            self.i += 2
            if self._peek() == "(" and not self._arguments()[0]:
                return False
        return True

    def _arguments(self) -> tuple[bool, int | str | None]:
        """Skip `( … )`: whether they close, and the value of a top-level
        `first` argument (see Field)."""
        tokens, n = self.tokens, len(self.tokens)
        depth = 0
        first: int | str | None = None
        i = self.i
        while i < n:
            token = tokens[i]
            if token in ("(", "{", "["):
                depth += 1
            elif token in (")", "}", "]"):
                depth -= 1
                if depth == 0:
                    self.i = i + 1
                    return token == ")", first
            elif depth == 1 and token == "first" and i + 2 < n and tokens[i + 1] == ":":
                value = tokens[i + 2]
                if _INTEGER.fullmatch(value):
                    first = int(value) if len(value) < 10 else "?"
                elif value == "$" and i + 3 < n:
                    first = "$" + tokens[i + 3]
                else:
                    first = "?"
            i += 1
        return False, None


def outline_of_ast(document: DocumentNode) -> Outline:
    """The same outline, from a parsed document (when the reader was unsure)."""
    operations = []
    fragments: dict[str, Selections] = {}
    for definition in document.definitions:
        if isinstance(definition, OperationDefinitionNode):
            name = definition.name.value if definition.name else None
            operations.append(
                Operation(
                    definition.operation.value,
                    name,
                    _selections_of(definition.selection_set),
                    len(definition.variable_definitions or ()),
                )
            )
        elif isinstance(definition, FragmentDefinitionNode):
            fragments.setdefault(
                definition.name.value,
                _selections_of(definition.selection_set, definition.type_condition.name.value),
            )
    return Outline(operations, fragments)


def _selections_of(node: SelectionSetNode, on_type: str | None = None) -> Selections:
    selections = Selections(on_type=on_type)
    for selection in node.selections:
        if isinstance(selection, FieldNode):
            sub = selection.selection_set
            selections.fields.append(
                Field(
                    key=selection.alias.value if selection.alias else selection.name.value,
                    name=selection.name.value,
                    aliased=selection.alias is not None,
                    first=_first_of(selection),
                    selections=_selections_of(sub) if sub is not None else None,
                )
            )
        elif isinstance(selection, InlineFragmentNode):
            condition = selection.type_condition.name.value if selection.type_condition else None
            selections.inline_fragments.append(_selections_of(selection.selection_set, condition))
        elif isinstance(selection, FragmentSpreadNode):
            selections.spreads.append(selection.name.value)
    return selections


def _first_of(node: FieldNode) -> int | str | None:
    for argument in node.arguments or ():
        if argument.name.value != "first":
            continue
        value = argument.value
        if isinstance(value, IntValueNode) and len(value.value) < 10:
            return int(value.value)
        if isinstance(value, VariableNode):
            return "$" + value.name.value
        return "?"
    return None
