"""Nodes and links of many graphs at once, read below the ORM (issue 14).

A page of 50 graphs of 20 nodes is ~2,000 rows; building a Tortoise model for
each cost ~20 % of the request's CPU. Lists of graphs (the DataLoaders in
resolvers/loaders.py) read plain records with the models' own attribute
names, so whatever reads a node's `block_id` or `input_default` takes either.
The records' fields are the tables' columns: tests/test_graph_rows.py checks
them, and their values, against the models, so a renamed column breaks a test,
not production. SQLite (make dev) reads through the ORM.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from typing import Any, NamedTuple

import orjson
from tortoise import connections

from app.models import Link, Node


# Tuples with names: made from a row at C speed (a frozen dataclass set each
# field through object.__setattr__, ~3 µs a row).
class NodeRecord(NamedTuple):
    id: uuid.UUID
    graph_id: int
    block_id: uuid.UUID
    input_default: Any
    metadata: Any
    position: int


class LinkRecord(NamedTuple):
    id: uuid.UUID
    graph_id: int
    source_id: uuid.UUID
    sink_id: uuid.UUID
    source_name: str
    sink_name: str
    is_static: bool
    position: int


JSON_COLUMNS = {"input_default", "metadata"}


def columns(record: Any) -> tuple[str, ...]:
    return record._fields


def _sql(record: type, table: str) -> str:
    return (
        f"SELECT {', '.join(columns(record))} FROM {table} "
        "WHERE graph_id = ANY($1::bigint[]) ORDER BY position"
    )


NODES_SQL = _sql(NodeRecord, "graph_nodes")
LINKS_SQL = _sql(LinkRecord, "graph_links")


async def _read(record: type, model: Any, sql: str, row_ids: list[int]) -> list[Any]:
    client = connections.get("default")
    if client.capabilities.dialect != "postgres":
        rows = await model.filter(graph_id__in=row_ids).order_by("position")
        return [record(**{name: getattr(row, name) for name in columns(record)}) for row in rows]
    async with client.acquire_connection() as conn:
        found = await conn.fetch(sql, row_ids)
    json_at = [i for i, name in enumerate(columns(record)) if name in JSON_COLUMNS]
    if not json_at:
        return [record(*row) for row in found]
    loads = orjson.loads
    records = []
    for row in found:
        values = list(row)
        for i in json_at:
            if values[i] is not None:
                values[i] = loads(values[i])
        records.append(record(*values))
    return records


def _grouped(records: list[Any], row_ids: list[int]) -> list[list[Any]]:
    grouped: dict[int, list[Any]] = defaultdict(list)
    for record in records:
        grouped[record.graph_id].append(record)
    return [grouped[row_id] for row_id in row_ids]


async def nodes_by_graph(row_ids: list[int]) -> list[list[NodeRecord]]:
    """Each graph's nodes (by graph row id) in position order, in key order."""
    return _grouped(await _read(NodeRecord, Node, NODES_SQL, list(set(row_ids))), row_ids)


async def links_by_graph(row_ids: list[int]) -> list[list[LinkRecord]]:
    """Each graph's links (by graph row id) in position order, in key order."""
    return _grouped(await _read(LinkRecord, Link, LINKS_SQL, list(set(row_ids))), row_ids)
