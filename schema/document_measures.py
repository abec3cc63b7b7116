"""What a document would cost, measured on its outline before it is parsed or
validated (SEMANTICS.md §11 and the README's limits table):

- depth: field levels from the root, through fragments; introspection fields
  do not count (`{ me { id } }` is 2);
- aliases: aliased fields, each fragment counted at every spread;
- selections per selection set and repeats of one response key in it, as
  execution merges them: a set together with its inline fragments and the
  fragments it spreads, and the sub-selections of all fields that share a
  response key. graphql-core's overlapping-fields rule compares every pair of
  fields that share a key, so these two bound its work;
- fields: every field of every operation with each fragment spread expanded
  (fragments used nowhere are counted once on their own);
- introspection: `__schema`, `__type` and the fields below them take no
  aliases (copies of the schema's tree are the way to multiply its cost);
- nodes: the worst-case number of objects in the result (GitHub's node
  limit): a field with `first` returns up to `first` items (a variable counts
  as the largest page the field allows), another list up to the bound in
  LIST_SIZES, and the counts multiply down nested lists.

Fragment totals are memoised, so a document whose fragments double at every
level costs a walk of its text, not of its expansion; the walk that merges
sets runs only once the expanded field count is known to be small.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import NamedTuple

from graphql import GraphQLList, GraphQLNonNull, GraphQLSchema, is_composite_type

from app.errors import bad_input
from app.services import (
    credits,
    estimates,
    executions,
    graph_validation,
    graphs,
    schedule_controls,
    store,
)
from schema.document_outline import (
    MAX_NESTING,
    Field,
    Outline,
    QueryTooComplex,
    Selections,
    SetLimits,
    too_many_fields,
    too_many_repeats,
)

# Lists without `first`: the most items they can hold. Lists inside a page
# hold at most the page's `first`, already counted by the field that has it.
DEFAULT_LIST_SIZE = 100
LIST_SIZES = {
    "Graph.nodes": graph_validation.MAX_NODES,
    "Graph.links": graph_validation.MAX_LINKS,
    "Graph.subGraphs": graph_validation.MAX_NODES,
    "GraphConnection.edges": 1,
    "ExecutionConnection.edges": 1,
    "CreditTransactionPage.transactions": 1,
    "ScheduleFiringConnection.edges": 1,
    "ExecutionEstimate.nodes": estimates.MAX_ESTIMATE_NODES,
    "Query.recommendedAgents": store.MAX_RECOMMENDED,
}
# The largest `first` each paged field accepts; what a variable `first` counts as.
PAGE_MAXIMA = {
    "Query.graphs": graphs.MAX_GRAPHS_PAGE,
    "Query.executions": executions.MAX_EXECUTIONS_PAGE,
    "Query.creditHistory": credits.MAX_HISTORY_PAGE,
    "Schedule.executions": schedule_controls.MAX_FIRINGS_PAGE,
}
# More variables than this in one operation are refused: no real operation
# has them, and validation's variable rules grow with their number.
MAX_VARIABLES = 100
# More operations than this in one document are refused: validation runs
# every rule over each (700 one-field operations cost 130 ms), and a client
# sends one at a time (a document of many is a persisted-query file, not a
# request).
MAX_OPERATIONS = 100
# Recursion through fragments deeper than this is refused (Python's own stack
# would give out first on a chain of thousands).
MAX_FRAGMENT_CHAIN = 100


@dataclass(frozen=True, slots=True)
class Limits:
    max_tokens: int
    max_depth: int
    max_aliases: int
    max_fields_per_set: int
    max_repeated_fields: int
    max_fields: int
    max_nodes: int

    @property
    def per_set(self) -> SetLimits:
        return SetLimits(self.max_tokens, self.max_fields_per_set, self.max_repeated_fields)


@dataclass(frozen=True, slots=True)
class Measures:
    depth: int
    aliases: int
    fields: int
    # Worst-case objects in the result of the costliest operation.
    nodes: int
    # Per operation (in document order): fields of its root selection set,
    # fragments and inline fragments included; a mutation's rate-limit cost.
    root_fields: tuple[int, ...]


class _Totals(NamedTuple):
    fields: int
    depth: int
    aliases: int
    # Field levels, introspection included: bounds the walks' recursion.
    nesting: int


_NONE = _Totals(0, 0, 0, 0)


_META_FIELDS = {"__schema": "__Schema", "__type": "__Type"}


@dataclass(frozen=True, slots=True)
class FieldShape:
    type_name: str
    is_list: bool
    is_composite: bool
    takes_first: bool
    first_default: int | None


class SchemaShape:
    """What the cost walk needs to know of each field, looked up once."""

    def __init__(self, schema: GraphQLSchema) -> None:
        self.schema = schema
        self.roots = {
            "query": schema.query_type.name if schema.query_type else None,
            "mutation": schema.mutation_type.name if schema.mutation_type else None,
            "subscription": schema.subscription_type.name if schema.subscription_type else None,
        }
        self._fields: dict[tuple[str | None, str], FieldShape | None] = {}

    def field(self, type_name: str | None, name: str) -> FieldShape | None:
        key = (type_name, name)
        if key not in self._fields:
            self._fields[key] = self._look_up(type_name, name)
        return self._fields[key]

    def _look_up(self, type_name: str | None, name: str) -> FieldShape | None:
        if name in _META_FIELDS and type_name == self.roots["query"]:
            # Not among the root's own fields, but what lies below them is
            # introspection (which takes no aliases).
            return FieldShape(_META_FIELDS[name], False, True, False, None)
        owner = self.schema.type_map.get(type_name or "")
        fields = getattr(owner, "fields", None)
        definition = fields.get(name) if isinstance(fields, dict) else None
        if definition is None:
            return None  # unknown here: validation says so
        output, is_list = definition.type, False
        while isinstance(output, GraphQLNonNull | GraphQLList):
            is_list = is_list or isinstance(output, GraphQLList)
            output = output.of_type
        first = definition.args.get("first")
        default = first.default_value if first is not None else None
        return FieldShape(
            type_name=output.name,
            is_list=is_list,
            is_composite=is_composite_type(output),
            takes_first=first is not None,
            first_default=default if isinstance(default, int) else None,
        )


def measure(outline: Outline, limits: Limits, shape: SchemaShape) -> Measures:
    """The measures of a document within its limits; raises QueryTooComplex
    (or BAD_USER_INPUT for fragments that spread themselves) otherwise."""
    if len(outline.operations) > MAX_OPERATIONS:
        raise QueryTooComplex(f"The document has more than {MAX_OPERATIONS} operations")
    totals = _FragmentTotals(outline.fragments)
    depth = aliases = fields = 0
    for operation in outline.operations:
        if operation.variables > MAX_VARIABLES:
            raise QueryTooComplex(f"An operation defines more than {MAX_VARIABLES} variables")
        found = totals.of(operation.selections)
        depth, aliases = max(depth, found.depth), aliases + found.aliases
        fields += found.fields
    unused = [name for name in outline.fragments if name not in totals.reached]
    for name in unused:
        fields += totals.of_fragment(name).fields
    if fields > limits.max_fields:
        raise QueryTooComplex(
            f"Document has more than {limits.max_fields} fields (each fragment spread counted)"
        )
    if depth > limits.max_depth:
        raise QueryTooComplex(f"Query depth {depth} exceeds the limit of {limits.max_depth}")
    if aliases > limits.max_aliases:
        raise QueryTooComplex(f"{aliases} aliases found. Allowed: {limits.max_aliases}")
    merger = _Merger(outline.fragments, limits, shape)
    nodes, root_fields = 0, []
    for operation in outline.operations:
        root_type = shape.roots.get(operation.kind)
        count, cost = merger.walk([(operation.selections, root_type)], 1)
        root_fields.append(count)
        nodes = max(nodes, cost)
    for name in unused:
        body = outline.fragments[name]
        merger.walk([(body, body.on_type)], 1)
    if nodes > limits.max_nodes:
        raise QueryTooComplex(
            f"The result could hold {nodes} objects, more than {limits.max_nodes}; "
            "ask for fewer items (first) or fewer nested lists"
        )
    return Measures(depth, aliases, fields, nodes, tuple(root_fields))


class _FragmentTotals:
    """Fields, depth and aliases of selection sets, each fragment's worked out once."""

    def __init__(self, fragments: dict[str, Selections]) -> None:
        self.fragments = fragments
        self.known: dict[str, _Totals] = {}
        self.visiting: list[str] = []
        self.reached: set[str] = set()

    def of_fragment(self, name: str) -> _Totals:
        known = self.known.get(name)
        if known is not None:
            return known
        body = self.fragments.get(name)
        if body is None:
            return _NONE  # unknown fragment: validation says so
        if name in self.visiting:
            chain = " > ".join([*self.visiting, name])
            raise bad_input(f"Fragment {name!r} spreads itself ({chain})")
        if len(self.visiting) >= MAX_FRAGMENT_CHAIN:
            raise QueryTooComplex(f"Fragments spread each other over {MAX_FRAGMENT_CHAIN} deep")
        self.reached.add(name)
        self.visiting.append(name)
        try:
            found = self.known[name] = self.of(body)
        finally:
            self.visiting.pop()
        return found

    def of(self, selections: Selections) -> _Totals:
        fields = depth = aliases = nesting = 0
        for item in selections.fields:
            sub = self.of(item.selections) if item.selections is not None else _NONE
            fields += 1 + sub.fields
            aliases += item.aliased + sub.aliases
            nesting = max(nesting, 1 + sub.nesting)
            if not item.name.startswith("__"):
                depth = max(depth, 1 + sub.depth)
        parts = [self.of(inline) for inline in selections.inline_fragments]
        spread: set[str] = set()
        for name in selections.spreads:
            sub = self.of_fragment(name)
            if name in spread:  # execution collects a fragment once per set
                sub = sub._replace(fields=0)
            spread.add(name)
            parts.append(sub)
        for sub in parts:
            fields, aliases = fields + sub.fields, aliases + sub.aliases
            depth, nesting = max(depth, sub.depth), max(nesting, sub.nesting)
        if nesting > MAX_NESTING:
            raise QueryTooComplex(f"Fields nest more than {MAX_NESTING} deep")
        return _Totals(fields, depth, aliases, nesting)


def _copies_introspection(item: Field, parent: str | None) -> bool:
    """Whether an alias of this field would copy (part of) the schema's
    introspection tree: the result is answered from the schema at no cost but
    CPU, so copies are the way to multiply it (MAX_INTROSPECTION_FIELDS bounds
    the rest). No client aliases them; `__typename` is a leaf like any other."""
    if item.name == "__typename":
        return False
    return item.name in ("__schema", "__type") or (parent or "").startswith("__")


class _Merger:
    """Walks selection sets as execution merges them, checking the per-set
    limits and counting worst-case objects."""

    def __init__(self, fragments: dict[str, Selections], limits: Limits, shape: SchemaShape):
        self.fragments = fragments
        self.limits = limits
        self.shape = shape

    def walk(self, parts: list[tuple[Selections, str | None]], scale: int) -> tuple[int, int]:
        """(fields in the merged set, objects below it) for the sets in `parts`
        (each with its parent type) merged into one, `scale` copies of it."""
        fields: list[tuple[Field, str | None]] = []
        selections = 0
        spread: set[str] = set()
        pending = list(parts)
        while pending:
            part, parent = pending.pop()
            fields.extend((item, parent) for item in part.fields)
            selections += len(part.fields) + len(part.inline_fragments)
            pending.extend((inline, inline.on_type or parent) for inline in part.inline_fragments)
            for name in part.spreads:
                body = self.fragments.get(name)
                if body is not None and name not in spread:
                    spread.add(name)
                    selections += 1
                    pending.append((body, body.on_type))
        if selections > self.limits.max_fields_per_set:
            raise too_many_fields(self.limits.max_fields_per_set)
        groups: dict[str, list[tuple[Field, str | None]]] = {}
        for item, parent in fields:
            groups.setdefault(item.key, []).append((item, parent))
            if item.aliased and item.key != item.name and _copies_introspection(item, parent):
                raise QueryTooComplex(
                    f"Introspection fields may not be aliased ({item.key}: {item.name}); "
                    "ask for the schema once"
                )
        if fields:
            key, repeats = Counter({k: len(v) for k, v in groups.items()}).most_common(1)[0]
            if repeats > self.limits.max_repeated_fields:
                raise too_many_repeats(key, self.limits.max_repeated_fields)
        objects = 0
        for group in groups.values():
            item, parent = group[0]
            field_shape = self.shape.field(parent, item.name)
            inner = None if field_shape is None else field_shape.type_name
            own, below = self._counts(item, parent, field_shape, scale)
            if field_shape is not None and field_shape.is_composite:
                objects += own
            subs = [(g.selections, inner) for g, _ in group if g.selections is not None]
            if subs:
                _, found = self.walk(subs, below)
                # Introspection is not a result the API builds from its data.
                objects += 0 if item.name.startswith("__") else found
        return len(fields), objects

    @staticmethod
    def _counts(item: Field, parent: str | None, shape: FieldShape | None, scale: int):
        """(objects this field returns, copies of each of its sub-selections)."""
        if shape is None:
            return scale, scale
        owner = f"{parent}.{item.name}"
        if shape.takes_first:
            largest = PAGE_MAXIMA.get(owner, DEFAULT_LIST_SIZE)
            first = item.first
            if first is None:
                first = shape.first_default if shape.first_default is not None else largest
            elif not isinstance(first, int):
                first = largest  # a variable or an odd value: the largest page
            # A larger `first` is refused by the field itself, before any work.
            items = max(0, min(first, largest))
            return (scale * items if shape.is_list else scale), scale * items
        if shape.is_list:
            items = LIST_SIZES.get(owner, DEFAULT_LIST_SIZE)
            return scale * items, scale * items
        return scale, scale
