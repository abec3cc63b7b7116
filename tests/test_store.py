"""Publishing graphs to the store and the agents recommended during onboarding (§4)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

from app.models import StoreListing, StoreListingVersion
from tests.conftest import TEST_ENV
from tests.graph_builders import create_graph, echo_graph
from tests.harness import ROOT

RECOMMENDED = """{ recommendedAgents { id graphId graphVersion name description creator
  runs rating } }"""


def _publish(graph_id: str, *integrations: str) -> subprocess.CompletedProcess:
    extra = [arg for name in integrations for arg in ("--integration", name)]
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "store", "publish", graph_id, *extra],
        cwd=ROOT,
        env={**os.environ, **TEST_ENV},
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_publish_and_recommend_matching_agents_first(gql, new_user):
    author = new_user("maker@example.com")
    await gql.ok("{ me { id } }", token=author.token)
    plain = await create_graph(gql, author, echo_graph("Echo helper"))
    popular = await create_graph(gql, author, echo_graph("Popular tool"))
    github = await create_graph(gql, author, echo_graph("Issue triager"))
    for graph, integrations in ((plain, ()), (popular, ()), (github, ("GitHub",))):
        result = _publish(graph["id"], *integrations)
        assert result.returncode == 0, result.stderr
        assert "published" in result.stdout
    await StoreListing.filter(graph_id=popular["id"]).update(runs=50, rating=4.5)

    reader = new_user()
    await gql.ok(
        'mutation { updateOnboarding(input: {integrations: ["github"]}) { integrations } }',
        token=reader.token,
    )
    agents = (await gql.ok(RECOMMENDED, token=reader.token))["recommendedAgents"]
    mine = [a for a in agents if a["graphId"] in {plain["id"], popular["id"], github["id"]}]
    assert [a["name"] for a in mine] == ["Issue triager", "Popular tool", "Echo helper"]
    triager = mine[0]
    assert triager["creator"] == "maker" and triager["graphVersion"] == 1
    version = await StoreListingVersion.get(id=triager["id"])
    assert version.integrations == ["github"]


async def test_republishing_adds_a_listing_version(gql, user):
    graph = await create_graph(gql, user)
    assert _publish(graph["id"]).returncode == 0
    await gql.ok(
        "mutation($id: ID!, $g: GraphInput!) { updateGraph(id: $id, graph: $g) { id } }",
        {"id": graph["id"], "g": echo_graph("better echo")},
        token=user.token,
    )
    assert _publish(graph["id"]).returncode == 0
    listing = await StoreListing.get(graph_id=graph["id"])
    versions = await StoreListingVersion.filter(listing_id=listing.id).order_by("version")
    assert [(v.version, v.graph_version, v.name) for v in versions] == [
        (1, 1, "echo"),
        (2, 2, "better echo"),
    ]
    agents = (await gql.ok(RECOMMENDED, token=user.token))["recommendedAgents"]
    ours = [a for a in agents if a["graphId"] == graph["id"]]
    assert len(ours) == 1 and ours[0]["graphVersion"] == 2


async def test_publishing_an_unknown_graph_fails_clearly():
    before = await StoreListing.all().count()
    for graph_id in (str(uuid.uuid4()), "nope"):
        result = _publish(graph_id)
        assert result.returncode == 1
        assert "Graph not found" in result.stderr
    assert await StoreListing.all().count() == before
