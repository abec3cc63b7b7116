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
from dataclasses import dataclass, fields
from typing import Any

import orjson
from tortoise import connections

from app.models import Link, Node


@dataclass(frozen=True, slots=True)
class NodeRecord:
    id: uuid.UUID
    graph_id: int
    block_id: uuid.UUID
    input_default: Any
    metadata: Any
    position: int


@dataclass(frozen=True, slots=True)
class LinkRecord:
    id: uuid.UUID
    graph_id: int
    source_id: uuid.UUID
    sink_id: uuid.UUID
    source_name: str
    sink_name: str
    is_static: bool
    position: int


JSON_COLUMNS = {"input_default", "metadata"}


def columns(record: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(record))


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
    json_at = [name in JSON_COLUMNS for name in columns(record)]
    return [
        record(
            *(
                orjson.loads(value) if is_json and value is not None else value
                for value, is_json in zip(row.values(), json_at, strict=True)
            )
        )
        for row in found
    ]


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
