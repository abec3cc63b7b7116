"""The graphql-core executor strawberry uses, with leaks closed, a cap on
the size of what it builds, and a short way through plain fields.

graphql-core 3.3's per-event executor of a subscription is a shallow copy of
the subscription's executor, so every event adds entries (keyed by the id of
that event's field lists) to one shared sub-field memo that lives as long as
the subscription: about 2 KiB per event per subscriber, never freed, and
long pauses as the dict grows. Each event gets its own memo here.

MAX_RESPONSE_BYTES: every leaf value is counted as it is completed (its JSON
size, plus a few bytes for its key), and every field error as it is caught
(its message, path and location), so a small query that would build a huge
result (aliases of long lists of large JSON, or of a field failing per item)
stops at the limit instead of building the body. The first leaf past it fails with ResponseTooLarge;
after that no resolver runs and leaves are not kept, and the request gate
answers that one error, QUERY_TOO_COMPLEX, without data.

Shared event results: a process's subscribers of one stream are handed the
same event object (app/events.py `Event.shape`), and one event is executed once
for all of them that ask the same operation (same parsed document, kept per
query text by the request gate) with the same variables under the same
caller's rights; the rest take that result (and app/graphql_view.py sends its
encoded bytes). Only a result without errors and without introspection is
shared, and only one that was ready without awaiting anything: a field that
reads the database is resolved per subscriber. Fan-out to a thousand
subscribers of one graph executed the same selection a thousand times.

MAX_INTROSPECTION_FIELDS: introspection is answered from the schema, so it
costs nothing but CPU and is open to anonymous callers; its result is a fixed
tree that aliases copy (30 copies of `__schema { types { fields { … } } }`
took 1.5 s of CPU and stalled every other request). Every field resolved
under `__schema` or `__type` is counted, and past the limit the operation
stops the same way.

Plain leaves (issue 14): a field that only reads an attribute and returns a
scalar or enum (mark_plain_leaves) is read here directly, with the same
errors, instead of through strawberry's resolver and a resolve info.
graphql-core's resolve-info helpers hold the executor weakly (_helpers_of), so
a request's objects are freed when it ends instead of by the collector.
"""

from __future__ import annotations

import asyncio
import math
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Sequence
from typing import Any

import orjson
from graphql import (
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLResolveInfoHelpers,
    Undefined,
    is_leaf_type,
    located_error,
)
from graphql.pyutils import RefMap, gather_with_cancel
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.schema.schema_converter import GraphQLCoreConverter
from strawberry.types.field import StrawberryField

from app.errors import AppError, ErrorCode

# A leaf's key, quotes and punctuation, roughly.
LEAF_OVERHEAD = 8
# An error's keys, location and code, and each step of its path, roughly.
ERROR_OVERHEAD = 96
PATH_STEP = 12


class ResponseTooLarge(AppError):
    def __init__(self, limit: int) -> None:
        super().__init__(
            ErrorCode.QUERY_TOO_COMPLEX,
            f"The response would be larger than {limit} bytes; ask for fewer items or fields",
        )


def _size(value: Any) -> int:
    if isinstance(value, str):
        return len(value) + LEAF_OVERHEAD
    if value is None or isinstance(value, bool | int | float):
        return 2 * LEAF_OVERHEAD
    try:
        return len(orjson.dumps(value)) + LEAF_OVERHEAD
    except (TypeError, orjson.JSONEncodeError):
        return len(repr(value)) + LEAF_OVERHEAD


# Set on a field that only reads an attribute of its object and returns a
# scalar or enum: (attribute, leaf type, non-null). Most of a large result is
# such fields (a page of graphs: ~7,000 of its ~8,000), and strawberry's
# wrappers and the resolve info built for each cost about as much as
# graphql-core's own work on the field (issue 14).
PLAIN_LEAF = "agentgraph_plain_leaf"
_NEVER_AWAITABLE = frozenset({str, int, float, bool, dict, list})


def mark_plain_leaves(schema: Any) -> None:
    """Marks the fields the executor reads directly: strawberry's own basic
    fields (no resolver, no field extension such as a permission, no
    exception handler, no arguments) of a scalar or enum type."""
    if schema.config.default_resolver is not getattr:
        return
    for named in schema._schema.type_map.values():
        if not isinstance(named, GraphQLObjectType) or named.name.startswith("__"):
            continue
        for field in named.fields.values():
            definition = field.extensions.get(GraphQLCoreConverter.DEFINITION_BACKREF)
            if not isinstance(definition, StrawberryField) or not definition.is_basic_field:
                continue
            # strawberry marks the resolver it gives a basic field with no handler.
            if not getattr(field.resolve, "_is_default", False) or field.args:
                continue
            non_null = isinstance(field.type, GraphQLNonNull)
            leaf = field.type.of_type if non_null else field.type
            if is_leaf_type(leaf):
                setattr(field, PLAIN_LEAF, (definition.python_name, leaf, non_null))


class IntrospectionTooLarge(ResponseTooLarge):
    def __init__(self, limit: int) -> None:
        AppError.__init__(
            self,
            ErrorCode.QUERY_TOO_COMPLEX,
            f"Introspection resolving more than {limit} fields; ask for the schema once "
            "(GraphiQL's introspection query) instead of copies of it",
        )


def _helpers_of(executor: Any) -> GraphQLResolveInfoHelpers:
    """graphql-core's resolve-info helpers, holding the executor weakly.

    Its own are the executor's bound methods, which the executor holds: a
    cycle through the request's context, loaders and every row they read, so
    nothing of a request was freed until a full collection (a page of graphs
    left ~7,000 objects, and the collector walking them was a third of the
    request's CPU). Only graphql-core's own frames, which hold the executor,
    call these while it works."""
    ref = weakref.ref(executor)

    def gather(values: Sequence[Awaitable[Any]]) -> Awaitable[list[Any]]:
        found = ref()
        if found is None:
            return gather_with_cancel(*values)
        return found.gather_async_work(values)

    def track(values: Sequence[Any]) -> None:
        found = ref()
        if found is not None:
            found.track_async_work(values)
            return
        for value in values:  # the execution is over: observe what still runs
            if asyncio.isfuture(value) or asyncio.iscoroutine(value):
                asyncio.ensure_future(value).add_done_callback(_observe)

    return GraphQLResolveInfoHelpers(gather=gather, track=track)


def _observe(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()


# Events whose results are kept for the subscribers still to be served; a
# thousand subscribers are served within one event's fan-out, so a few suffice.
SHARED_RESULTS_KEPT = 64


class SharedEventResults:
    """Results of subscription events by (event, operation, variables, rights),
    and the JSON of their data once one was sent. Each entry holds its event,
    operation and result, so the ids in its key (and of its data) stay theirs."""

    def __init__(self, kept: int = SHARED_RESULTS_KEPT) -> None:
        self.kept = kept
        # key -> [event, operation, result, encoded data or None]
        self._results: OrderedDict[tuple, list[Any]] = OrderedDict()
        self._by_data: dict[int, tuple] = {}

    def get(self, key: tuple) -> Any:
        entry = self._results.get(key)
        return None if entry is None else entry[2]

    def put(self, key: tuple, event: Any, operation: Any, result: Any) -> None:
        self._results[key] = [event, operation, result, None]
        self._by_data[id(result.data)] = key
        while len(self._results) > self.kept:
            _, (_, _, dropped, _) = self._results.popitem(last=False)
            self._by_data.pop(id(dropped.data), None)

    def encoded(self, data: Any) -> orjson.Fragment | None:
        """The JSON of a shared result's `data`, encoded once; None for any
        other value."""
        key = self._by_data.get(id(data))
        entry = self._results.get(key) if key is not None else None
        if entry is None or entry[2].data is not data:
            return None
        if entry[3] is None:
            entry[3] = orjson.Fragment(orjson.dumps(data))
        return entry[3]


SHARED_RESULTS = SharedEventResults()


def _rights(context: Any) -> tuple | None:
    """What of the caller a result may depend on: who they are and what they may
    do (not their token's expiry). None when there is no signed-in caller."""
    principal = getattr(context, "_principal", None)
    if principal is None:
        return None
    return (principal.user_id, principal.is_admin, principal.api_key_id, principal.permissions)


class _Executed:
    """What a subscriber's event executes to when its result is shared: that result."""

    __slots__ = ("result",)

    def __init__(self, result: Any) -> None:
        self.result = result

    def execute_operation(self, serially: bool | None = None) -> Any:
        return self.result


class AgentGraphExecutor(StrawberryGraphQLCoreExecutionContext):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = getattr(self.context_value, "settings", None)
        self.response_limit = getattr(settings, "MAX_RESPONSE_BYTES", None) or math.inf
        self.introspection_limit = getattr(settings, "MAX_INTROSPECTION_FIELDS", None) or math.inf
        self.response_bytes = 0
        self.introspection_fields = 0
        self.too_large = False
        self.async_helpers = _helpers_of(self)
        # A resolver middleware (a schema extension's `resolve`) sees every field.
        middleware = self.middleware_manager
        self.read_plain_leaves = not (middleware and middleware.middlewares)
        # Per-event executors: the key their result is shared under, if any.
        self.shared_key: tuple | None = None
        # The subscription's variables as a key (made once), or False: not shareable.
        self._variables_key: str | bool | None = None

    def build_per_event_executor(self, payload: Any):
        key = self._shared_key(payload)
        if key is not None and (shared := SHARED_RESULTS.get(key)) is not None:
            return _Executed(shared)  # no copy of this executor for it
        executor = super().build_per_event_executor(payload)
        executor._relevant_sub_fields = {}
        # Its plans too (keyed by this event's field sets), or they pile up likewise.
        executor._initial_execution_plans = RefMap()
        executor._deferred_execution_plans = RefMap()
        executor.response_bytes = 0
        executor.introspection_fields = 0
        executor.too_large = False
        executor.shared_key = key
        # Its own helpers: the copied ones would work on this executor's behalf.
        executor.async_helpers = _helpers_of(executor)
        return executor

    def execute_operation(self, serially: bool | None = None) -> Any:
        result = super().execute_operation(serially)
        if (
            self.shared_key is not None
            and not self.is_awaitable(result)
            and not result.errors
            and not self.introspection_fields
        ):
            SHARED_RESULTS.put(self.shared_key, self.root_value, self.operation, result)
        return result

    def _shared_key(self, payload: Any) -> tuple | None:
        rights = _rights(self.context_value)
        if rights is None:
            return None
        if self._variables_key is None:
            try:
                # As text: orjson's bytes keep its 4 KiB write buffer, which a
                # subscription would hold for as long as it is open.
                self._variables_key = orjson.dumps(
                    self.variable_values.coerced, option=orjson.OPT_SORT_KEYS
                ).decode()
            except (TypeError, orjson.JSONEncodeError):
                self._variables_key = False  # a value not plainly comparable: not shared
        if self._variables_key is False:
            return None
        return (id(payload), id(self.operation), self._variables_key, rights)

    def execute_field(
        self, parent_type: Any, source: Any, field_details_list: Any, path: Any, *rest: Any
    ) -> Any:
        if self.too_large:
            return None  # the result is dropped: resolve nothing more
        field_def = parent_type.fields.get(field_details_list[0].node.name.value)
        plain = getattr(field_def, PLAIN_LEAF, None)
        if plain is not None and self.read_plain_leaves:
            try:
                result = getattr(source, plain[0])
                if result is None or result is Undefined:
                    if plain[2]:
                        raise TypeError(
                            "Cannot return null for non-nullable field "
                            f"{parent_type.name}.{field_details_list[0].node.name.value}."
                        )
                    return None
                if isinstance(result, Exception):
                    raise result
                if type(result) in _NEVER_AWAITABLE or not self.is_awaitable(result):
                    return self.complete_leaf_value(plain[1], result)
            except Exception as raw_error:
                self.handle_field_error(raw_error, field_def.type, field_details_list, path)
                return None
        if parent_type.name.startswith("__"):
            self.introspection_fields += 1
            if self.introspection_fields > self.introspection_limit:
                self.too_large = True
                nodes = [details.node for details in field_details_list]
                refusal = IntrospectionTooLarge(int(self.introspection_limit))
                self.collected_errors.add(located_error(refusal, nodes, path.as_list()), path)
                return None
        return super().execute_field(parent_type, source, field_details_list, path, *rest)

    def build_response(self, data: Any) -> Any:
        if self.introspection_fields and hasattr(self.context_value, "introspection_fields"):
            self.context_value.introspection_fields += self.introspection_fields
        return super().build_response(data)

    def handle_field_error(
        self, raw_error: Exception, return_type: Any, field_details_list: Any, path: Any
    ) -> None:
        if not self.too_large:
            self.response_bytes += (
                ERROR_OVERHEAD + len(str(raw_error)) + PATH_STEP * len(path.as_list())
            )
            if self.response_bytes > self.response_limit:
                self.too_large = True
                raw_error = ResponseTooLarge(int(self.response_limit))
        super().handle_field_error(raw_error, return_type, field_details_list, path)

    def complete_leaf_value(self, return_type: Any, result: Any) -> Any:
        if self.too_large:
            return 0  # a placeholder: the result is dropped
        value = super().complete_leaf_value(return_type, result)
        self.response_bytes += _size(value)
        if self.response_bytes > self.response_limit:
            self.too_large = True
            raise ResponseTooLarge(int(self.response_limit))
        return value
