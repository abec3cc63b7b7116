"""The outline read from a query text before parsing (schema/document_outline.py)
and the measures taken on it (schema/document_measures.py), in process: the
reader must agree with graphql-core's parser on every executable document,
give up on what it does not know, and refuse over-limit selection sets as it
reads them."""

from __future__ import annotations

import dataclasses

import pytest
from graphql import get_introspection_query, parse

from app.errors import AppError
from app.settings import get_settings
from resolvers.root import build_schema
from schema.document_measures import Limits, SchemaShape, measure
from schema.document_outline import QueryTooComplex, SetLimits, outline_of_ast, read_outline

LOOSE = SetLimits(max_tokens=100_000, max_fields_per_set=10_000, max_repeated_fields=10_000)

CORPUS = [
    "{ me { id email } }",
    "query Me { me { id } }",
    "query($n: Int = 5, $after: String) { graphs(first: $n, after: $after) { totalCount } }",
    "mutation Save($g: GraphInput!) { createGraph(graph: $g) { id } }",
    "subscription($id: ID!) { executionEvents(executionId: $id) { __typename } }",
    'mutation { a: updateTimezone(timezone: "UTC") { id } b: updateTimezone(timezone: "x") { a } }',
    "{ graphs(first: 10) { edges { node { ...G } } } } fragment G on Graph { id nodes { id } }",
    "fragment A on Query { me { ...B } } fragment B on User { id } { ...A }",
    "{ me { ... on User { id ... { email } } ... @include(if: true) { name } } }",
    "{ me @skip(if: false) { id @include(if: true) } }",
    # Values that look like selection sets or keywords, in arguments and strings.
    'mutation { executeGraph(graphId: "x", inputs: {first: 3, query: "{ a }", l: [{b: 1}]}) '
    "{ id } }",
    '{ graphs(first: -1, after: "}\\"{") { totalCount } }',
    '{ x(s: """block "quoted" \\""" and { braces }""") { y } }',
    '# a comment with { braces } and "quotes\n{ me { id } } # trailing',
    "{ fragment query mutation on: me { on } }",
    "{ a(first: 12345678901) { b } c(first: 1.5) { d } }",
    get_introspection_query(descriptions=True),
]


@pytest.mark.parametrize("text", CORPUS)
def test_the_reader_agrees_with_the_parser(text):
    assert read_outline(text, LOOSE) == outline_of_ast(parse(text))


@pytest.mark.parametrize(
    "text",
    [
        '{ me(a: "unterminated) { id } }',
        '{ me(a: """never closed) { id } }',
        "{ me { id }",
        "type Query { me: User }",
        "{ me { id } } ?",
        "{ ...  }",
    ],
)
def test_the_reader_gives_up_on_what_it_does_not_know(text):
    assert read_outline(text, LOOSE) is None


def test_hostile_quoting_is_read_once():
    # An unterminated string after every quote used to mean a rescan from each
    # one (quadratic); the reader takes the rest of the text as one token.
    text = '{ me(a: """' + '\\"""' * 50_000 + ") { id } }"
    assert read_outline(text, LOOSE) is None
    text = '{ me(a: "' + '\\"' * 50_000 + "\n) { id } }"
    assert read_outline(text, LOOSE) is None


def test_over_limit_sets_are_refused_while_read():
    limits = SetLimits(max_tokens=5000, max_fields_per_set=100, max_repeated_fields=10)
    with pytest.raises(QueryTooComplex, match="'id' appears more than 10 times"):
        read_outline("{ me { " + "id " * 4990 + "} }", limits)
    with pytest.raises(QueryTooComplex, match="more than 100 selections"):
        read_outline("{ me { " + " ".join(f"f{i}" for i in range(101)) + " } }", limits)
    with pytest.raises(QueryTooComplex, match="more than 5000 tokens"):
        read_outline("{ " + "a " * 5000 + "}", limits)
    # Comments are not tokens.
    assert read_outline("#x\n" * 6000 + "{ me { id } }", limits) is not None


@pytest.fixture(scope="module")
def shape():
    return SchemaShape(build_schema(get_settings())._schema)


LIMITS = Limits(
    max_tokens=5000,
    max_depth=12,
    max_aliases=30,
    max_fields_per_set=100,
    max_repeated_fields=10,
    max_fields=1000,
    max_nodes=500_000,
)


def _measure(text, shape, limits=LIMITS):
    return measure(outline_of_ast(parse(text)), limits, shape)


def test_repeats_count_across_fragments_and_inline_fragments(shape):
    fragment = "fragment F on User { " + "id " * 5 + "}"
    assert _measure("{ me { ...F " + "id " * 5 + "} } " + fragment, shape).fields == 11
    with pytest.raises(QueryTooComplex, match="'id' appears more than 10"):
        _measure("{ me { ...F ... on User { " + "id " * 6 + "} } } " + fragment, shape)
    # Fields that share a key merge their sub-selections, as execution does.
    with pytest.raises(QueryTooComplex, match="'id' appears more than 10"):
        _measure("{ " + "me { id id id } " * 4 + "}", shape)


def test_fragments_doubling_at_every_level_are_counted_not_expanded(shape):
    fragments = " ".join(
        f"fragment T{i} on __Type {{ ofType {{ ...T{i + 1} }} interfaces {{ ...T{i + 1} }} }}"
        for i in range(40)
    )
    text = '{ __type(name: "Graph") { ...T0 } } ' + fragments + " fragment T40 on __Type { name }"
    with pytest.raises(QueryTooComplex, match="more than 1000 fields"):
        _measure(text, shape)


def test_a_fragment_that_spreads_itself_is_bad_input(shape):
    with pytest.raises(AppError, match="spreads itself") as refused:
        _measure("{ me { ...A } } fragment A on User { ...B } fragment B on User { ...A }", shape)
    assert refused.value.code.value == "BAD_USER_INPUT"


def test_nodes_multiply_down_nested_lists(shape):
    one = "{ graphs(first: 10) { edges { node { nodes { id } } } } }"
    # the connection, 10 edges, 10 graphs, 10 x 1000 nodes
    assert _measure(one, shape).nodes == 1 + 10 + 10 + 10 * 1000
    # A variable `first` counts as the largest page the field allows (100).
    variable = "query($n: Int!) { graphs(first: $n) { edges { node { id } } } }"
    assert _measure(variable, shape).nodes == 1 + 100 + 100
    aliased = "{ " + " ".join(f"a{i}: {one[2:-2]}" for i in range(30)) + " }"
    with pytest.raises(QueryTooComplex, match="could hold 300630 objects"):
        _measure(aliased, shape, dataclasses.replace(LIMITS, max_nodes=300_000))


def test_root_fields_count_through_fragments_and_directives(shape):
    text = """mutation {
      a: updateTimezone(timezone: "UTC") { id }
      ... on Mutation { b: updateTimezone(timezone: "UTC") { id } }
      ...M
      c: updateTimezone(timezone: "UTC") @include(if: false) { id }
    }
    fragment M on Mutation { d: updateTimezone(timezone: "UTC") { id } }"""
    assert _measure(text, shape).root_fields == (4,)
