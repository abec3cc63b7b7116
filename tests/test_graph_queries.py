"""Listing graphs costs a constant number of SQL queries (DataLoaders)."""

from __future__ import annotations

from app.services import graphs
from app.services.graph_validation import GraphSpec, LinkSpec, NodeSpec
from app.settings import get_settings
from tests.execution_helpers import execute, wait_for_end
from tests.graph_builders import block_id, create_graph, echo_graph
from tests.in_process import counting_queries, schema_runner

LIST = """{ graphs(first: 100) { totalCount edges { node {
  nodes { id block { id } } links { id } } } } }"""


async def _make_graphs(user_id, count: int, nodes_each: int) -> None:
    store = block_id("StoreValue")
    for index in range(count):
        nodes = [NodeSpec(id=f"n{i}", block_id=store) for i in range(nodes_each)]
        links = [LinkSpec(f"n{i}", f"n{i + 1}", "output", "input") for i in range(nodes_each - 1)]
        await graphs.create_graph(
            get_settings(), user_id, GraphSpec(f"g{index}", nodes, links), None
        )


async def _statements_for_listing(run, monkeypatch, user_id) -> tuple[int, dict]:
    async with counting_queries(monkeypatch) as counter:
        result = await run(LIST, user_id)
    assert result.errors is None, result.errors
    return len(counter.statements), result.data


async def test_listing_graphs_costs_the_same_queries_for_1_and_50_graphs(
    gql, new_user, monkeypatch
):
    one, fifty = new_user(), new_user()
    for person in (one, fifty):
        await gql.ok("{ me { id } }", token=person.token)
    await _make_graphs(one.id, 1, 20)
    await _make_graphs(fifty.id, 50, 20)
    async with schema_runner() as run:
        await run("{ blocks { id } }", one.id)  # warm the block catalogue
        count_one, data_one = await _statements_for_listing(run, monkeypatch, one.id)
        count_fifty, data_fifty = await _statements_for_listing(run, monkeypatch, fifty.id)
    assert data_one["graphs"]["totalCount"] == 1
    assert data_fifty["graphs"]["totalCount"] == 50
    edges = data_fifty["graphs"]["edges"]
    assert all(len(e["node"]["nodes"]) == 20 and len(e["node"]["links"]) == 19 for e in edges)
    assert all(n["block"]["id"] for e in edges for n in e["node"]["nodes"])
    assert count_one == count_fifty
    assert 3 <= count_fifty <= 5


async def test_aliases_of_one_shared_execution_read_it_once(gql, new_user, worker, monkeypatch):
    """Anonymous `sharedExecution` aliased 30 times loaded the run 30 times: a
    run whose outputs hold 45 MB (one input fanned out to 50 outputs) made one
    anonymous request of 10 aliases take 460 MB and 1.8 s of CPU."""
    person = new_user()
    graph = await create_graph(gql, person, echo_graph())
    started = await execute(gql, person, graph["id"], {"text": "hello"})
    await wait_for_end(gql, person, started["id"])
    share = "mutation($id: ID!) { shareExecution(id: $id) { shareToken } }"
    token = (await gql.ok(share, {"id": started["id"]}, token=person.token))["shareExecution"][
        "shareToken"
    ]

    def aliases(count: int) -> str:
        one = f'sharedExecution(shareToken: "{token}") {{ status outputs }}'
        return "{ " + " ".join(f"a{i}: {one}" for i in range(count)) + " }"

    async with schema_runner() as run:
        counts = []
        for count in (1, 30):
            async with counting_queries(monkeypatch) as counter:
                result = await run(aliases(count), person.id)
            assert result.errors is None, result.errors
            assert result.data[f"a{count - 1}"]["outputs"] == {"result": ["hello"]}
            counts.append(len(counter.statements))
    assert counts[0] == counts[1]
