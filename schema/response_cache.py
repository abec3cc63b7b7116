"""Repeated `graphs` requests answered from the per-user cache
(app/services/graphs_cache.py), by the request gate after it admitted them.

Only a query whose root fields are all `graphs` (or `__typename`), selecting
nothing that changes without a write to the user's graphs, is cached; what a
request sees is what the resolvers would give it, permissions included: the
caller must be signed in and allowed to read graphs before the cache is asked.
Over HTTP only (websocket and in-process results stay plain data); a response
says `X-Graphs-Cache: hit` or `miss`. A hit is a stored body as it is:
zstd-compressed for a client that accepts zstd, else gzip-compressed for one
that accepts gzip (every browser and HTTP library), else inflated.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from typing import Any

import zstandard
from graphql import (
    DocumentNode,
    ExecutionResult,
    FieldNode,
    FragmentDefinitionNode,
    OperationDefinitionNode,
    OperationType,
)
from starlette.responses import Response

from app.errors import AppError
from app.models import ApiKeyPermission
from app.services.graphs_cache import ENCODINGS, GraphsCache, graphs_cache

CACHED_ROOT_FIELDS = frozenset({"graphs", "__typename"})
# Fields under `graphs` whose values change without a write to the user's graphs.
VOLATILE_FIELDS = frozenset({"trigger", "triggerDeliveries"})
HEADER = "X-Graphs-Cache"
# The prefix and suffix of a stored body around its data.
BODY_HEAD, BODY_TAIL = b'{"data":', b"}"


@dataclass(frozen=True, slots=True)
class CachedBody:
    """A hit's whole response body, for the view to send as it is
    (app/graphql_view.py); `encoding` is its Content-Encoding, if any."""

    body: bytes
    encoding: str | None

    def data(self) -> bytes:
        """The JSON of its data alone."""
        return inflate(self.body, self.encoding)[len(BODY_HEAD) : -len(BODY_TAIL)]


def inflate(body: bytes, encoding: str | None) -> bytes:
    if encoding == "zstd":
        return zstandard.ZstdDecompressor().decompress(body)
    return gzip.decompress(body) if encoding == "gzip" else body


def chosen_encoding(accept_encoding: str) -> str | None:
    """The stored encoding to send (zstd before gzip: as small, inflated ~7x
    faster), or None for plain JSON; `x;q=0` refuses x, `*` stands for any."""
    accepted: dict[str, bool] = {}
    for item in accept_encoding.lower().split(","):
        name, _, params = item.partition(";")
        q = params.strip().removeprefix("q=")
        try:
            accepted.setdefault(name.strip(), not params.strip() or float(q) > 0)
        except ValueError:
            accepted.setdefault(name.strip(), False)
    for encoding in ENCODINGS:
        if accepted.get(encoding, accepted.get("*", False)):
            return encoding
    return None


def cacheable_operations(document: DocumentNode) -> frozenset[str | None]:
    """Names of the document's operations (None for an anonymous one) that
    may be answered from the cache."""
    fragments_ok = not any(
        _volatile(d) for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    )
    found: set[str | None] = set()
    for definition in document.definitions:
        if not isinstance(definition, OperationDefinitionNode):
            continue
        if definition.operation != OperationType.QUERY or not fragments_ok:
            continue
        roots = definition.selection_set.selections
        if not any(isinstance(s, FieldNode) and s.name.value == "graphs" for s in roots):
            continue
        if all(
            isinstance(s, FieldNode) and s.name.value in CACHED_ROOT_FIELDS for s in roots
        ) and not _volatile(definition):
            found.add(definition.name.value if definition.name else None)
    return frozenset(found)


def _volatile(node: Any) -> bool:
    selection_set = getattr(node, "selection_set", None)
    for selection in selection_set.selections if selection_set else ():
        if isinstance(selection, FieldNode) and selection.name.value in VOLATILE_FIELDS:
            return True
        if _volatile(selection):
            return True
    return False


@dataclass
class Miss:
    cache: GraphsCache
    user_id: Any
    generation: str
    key: str


async def answer_from_cache(
    context: Any, operation_name: str | None, schema_version: str
) -> Miss | None:
    """Puts a cached result on the execution context (a hit), or returns what
    storing this request's result needs (a miss); None when not cached."""
    ours = context.context
    if not isinstance(ours.response, Response):
        return None  # over HTTP only: a hit's data is JSON text (an orjson.Fragment)
    try:
        principal = await ours.optional_principal()
    except AppError:
        return None  # the resolvers answer the refusal
    if principal is None or not principal.allows(ApiKeyPermission.READ_GRAPH):
        return None
    cache = graphs_cache(ours.settings)
    key = cache.request_key(schema_version, context.query, operation_name, context.variables)
    encoding = chosen_encoding(ours.request.headers.get("accept-encoding", ""))
    data, generation = await cache.lookup(principal.user_id, key, encoding or "gzip")
    if generation is None:
        return None
    if data is not None:
        if encoding is not None:
            cached = CachedBody(data, encoding)
        else:
            cached = CachedBody(inflate(data, "gzip"), None)
        context.result = ExecutionResult(data=cached, errors=None)
        _mark(ours, "hit")
        return None
    _mark(ours, "miss")
    return Miss(cache, principal.user_id, generation, key)


async def keep(context: Any, miss: Miss) -> None:
    result = context.result
    if isinstance(result, ExecutionResult) and result.data is not None and not result.errors:
        await miss.cache.store(miss.user_id, miss.generation, miss.key, result.data)


def _mark(ours: Any, outcome: str) -> None:
    ours.response.headers[HEADER] = outcome
    # A hit's encoding follows the request's Accept-Encoding.
    ours.response.headers["Vary"] = "Accept-Encoding"
