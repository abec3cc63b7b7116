"""The graphql-core executor strawberry uses, with a leak closed and a cap on
the size of what it builds.

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
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any

import orjson
from graphql import located_error
from graphql.pyutils import RefMap
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

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


class IntrospectionTooLarge(ResponseTooLarge):
    def __init__(self, limit: int) -> None:
        AppError.__init__(
            self,
            ErrorCode.QUERY_TOO_COMPLEX,
            f"Introspection resolving more than {limit} fields; ask for the schema once "
            "(GraphiQL's introspection query) instead of copies of it",
        )


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
        # Per-event executors: the key their result is shared under, if any.
        self.shared_key: tuple | None = None
        # The subscription's variables as a key (made once), or False: not shareable.
        self._variables_key: bytes | bool | None = None

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
                self._variables_key = orjson.dumps(
                    self.variable_values.coerced, option=orjson.OPT_SORT_KEYS
                )
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
