"""Lists of graphs read their nodes and links below the ORM
(app/services/graph_rows.py): the records must be the models' columns and hold
the models' values, so a renamed column breaks this test, not production."""

from __future__ import annotations

from app.models import Graph, Link, Node
from app.services import graph_rows
from tests.graph_builders import create_graph, echo_graph, link, node


def model_columns(model) -> set[str]:
    return set(model._meta.fields_db_projection.values())


async def test_records_are_the_tables_columns(database):
    for record, model, sql in (
        (graph_rows.NodeRecord, Node, graph_rows.NODES_SQL),
        (graph_rows.LinkRecord, Link, graph_rows.LINKS_SQL),
    ):
        columns = set(graph_rows.columns(record))
        assert columns == model_columns(model), columns ^ model_columns(model)
        assert f"FROM {model._meta.db_table} " in sql
    assert graph_rows.JSON_COLUMNS <= set(graph_rows.columns(graph_rows.NodeRecord))


def test_a_link_record_is_a_link():
    """`Graph.links` gives the records as they are, for Link's fields to read."""
    from schema.types.graphs import Link

    fields = Link.__strawberry_definition__.fields
    assert all(f.base_resolver is None for f in fields)
    assert {f.python_name for f in fields} <= set(graph_rows.columns(graph_rows.LinkRecord))


async def test_records_hold_what_the_models_hold(gql, user):
    spec = echo_graph("rows")
    spec["nodes"].append(node("extra", "StoreValue", data={"nested": [1, "two", None]}))
    spec["links"].append(link("store", "output", "extra", "input"))
    created = await create_graph(gql, user, spec)
    other = await create_graph(gql, user, echo_graph("other"))
    rows = [(await Graph.get(graph_id=g["id"], version=1)).id for g in (created, other)]
    nodes = await graph_rows.nodes_by_graph([*rows, rows[0]])
    links = await graph_rows.links_by_graph(rows)
    assert len(nodes) == 3 and nodes[0] == nodes[2]
    for row_id, got_nodes, got_links in zip(rows, nodes, links, strict=False):
        want_nodes = await Node.filter(graph_id=row_id).order_by("position")
        want_links = await Link.filter(graph_id=row_id).order_by("position")
        assert got_nodes == [
            graph_rows.NodeRecord(
                **{c: getattr(n, c) for c in graph_rows.columns(graph_rows.NodeRecord)}
            )
            for n in want_nodes
        ]
        assert got_links == [
            graph_rows.LinkRecord(
                **{c: getattr(k, c) for c in graph_rows.columns(graph_rows.LinkRecord)}
            )
            for k in want_links
        ]
        assert got_nodes and got_links
    assert await graph_rows.nodes_by_graph([]) == []
