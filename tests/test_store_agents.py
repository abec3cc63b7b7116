"""A store agent run by someone else (issue 16's first "done when"): user B adds A's
listed agent from recommendedAgents, runs it with B's own stored LLM key against a
local stand-in of the model API, pays for it, and still sees nothing else of A's."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from app.models import StoredCredentials
from tests.agent_helpers import (
    ADD,
    DELETE_CREDENTIALS,
    EXECUTE,
    LIST_CREDENTIALS,
    RECOMMENDED,
    LlmStack,
    create_credentials,
    execute,
    llm_graph,
    llm_stack,
    publish,
)
from tests.execution_helpers import wait_for_end, wait_for_node
from tests.graph_builders import GET, create_graph, echo_graph, node_ids

ME = "{ me { credits } }"
ONBOARDING = "{ onboarding { completedSteps } }"
EXECUTIONS = """query($g: ID) { executions(graphId: $g) { totalCount edges { node { id } } } }"""
EXECUTION = "query($id: ID!) { execution(id: $id) { id status } }"
GRAPHS = "{ graphs { totalCount edges { node { id } } } }"
VERSIONS = "query($id: ID!) { graphVersions(id: $id) { id version } }"
HISTORY = """{ creditHistory(type: USAGE) { transactions { amount usageGraphId
  usageExecutionId } } }"""
SCHEMA = "query($id: ID!) { graph(id: $id) { credentialsInputSchema } }"


@pytest.fixture(scope="module")
async def stack(database) -> AsyncIterator[LlmStack]:
    async with llm_stack("store-agents") as running:
        yield running


async def _credits(gql, user) -> int:
    return (await gql.ok(ME, token=user.token))["me"]["credits"]


async def _run_error(gql, user, graph_id: str, **kw) -> dict:
    variables = {"id": graph_id, **kw}
    return await gql.error(EXECUTE, variables, token=user.token)


async def test_b_runs_as_listed_agent_with_own_key_pays_and_sees_nothing_else(
    stack, new_user, settings
):
    gql, stand_in = stack.gql, stack.stand_in
    maker, runner = new_user("maker@example.com"), new_user()
    for person in (maker, runner):
        await gql.ok("{ me { id } }", token=person.token)

    # A: a listed LLM agent, and another graph that stays private; A runs both.
    spec = llm_graph()
    listed = await create_graph(gql, maker, spec)
    llm_node = node_ids(spec, listed)["llm"]
    private = await create_graph(gql, maker, echo_graph("private"))
    maker_key = await create_credentials(gql, maker, secret="sk-maker-key-0001")
    maker_run = await execute(
        gql, maker, listed["id"], inputs={"topic": "a"}, creds={"llm_credentials": maker_key["id"]}
    )
    private_run = await execute(gql, maker, private["id"], inputs={"text": "mine"})
    assert (await wait_for_end(gql, maker, maker_run["id"]))["status"] == "COMPLETED"
    await wait_for_end(gql, maker, private_run["id"])
    publish(listed["id"])

    # B finds it among the recommendations, but cannot run or read it before adding it.
    agents = (await gql.ok(RECOMMENDED, token=runner.token))["recommendedAgents"]
    [agent] = [a for a in agents if a["graphId"] == listed["id"]]
    assert agent["runs"] == 1 and agent["creator"] == "maker"
    error = await _run_error(gql, runner, listed["id"], inputs={"topic": "b"})
    assert error["extensions"]["code"] == "NOT_FOUND"
    assert (await gql.ok(GET, {"id": listed["id"]}, token=runner.token))["graph"] is None

    added = (await gql.ok(ADD, {"id": agent["id"]}, token=runner.token))["addStoreAgentToLibrary"]
    assert added["graphId"] == listed["id"] and added["isCreatedByUser"] is False
    assert added["canRun"] is True and added["creator"] == "maker"
    assert added["storeAgentId"] == agent["id"]
    readable = (await gql.ok(GET, {"id": listed["id"]}, token=runner.token))["graph"]
    assert [n["id"] for n in readable["nodes"]] == [n["id"] for n in listed["nodes"]]
    schema = (await gql.ok(SCHEMA, {"id": listed["id"]}, token=runner.token))["graph"]
    assert schema["credentialsInputSchema"]["required"] == ["llm_credentials"]
    assert (
        schema["credentialsInputSchema"]["properties"]["llm_credentials"]["credentials_provider"]
        == "openai"
    )

    # Credentials: missing, someone else's, the wrong provider: node errors, no run.
    error = await _run_error(gql, runner, listed["id"], inputs={"topic": "b"})
    assert error["extensions"]["code"] == "GRAPH_VALIDATION_FAILED"
    assert error["extensions"]["nodeErrors"][llm_node]["llm_credentials"].startswith(
        "credentials required"
    )
    error = await _run_error(
        gql, runner, listed["id"], inputs={"topic": "b"}, creds={"llm_credentials": maker_key["id"]}
    )
    assert error["extensions"]["nodeErrors"] == {
        llm_node: {"llm_credentials": "no such credentials"}
    }
    bearer = await create_credentials(gql, runner, provider="github", kind="BEARER")
    error = await _run_error(
        gql, runner, listed["id"], inputs={"topic": "b"}, creds={"llm_credentials": bearer["id"]}
    )
    assert error["extensions"]["nodeErrors"] == {
        llm_node: {"llm_credentials": "needs openai credentials"}
    }

    # With B's own key it runs, as B, paid by B.
    own_secret = "sk-runner-key-0002"
    own_key = await create_credentials(gql, runner, secret=own_secret)
    maker_credits, runner_credits = await _credits(gql, maker), await _credits(gql, runner)
    stand_in.requests.clear()
    run = await execute(
        gql,
        runner,
        listed["id"],
        inputs={"topic": "why is the sky blue"},
        creds={"llm_credentials": own_key["id"]},
        s="LIBRARY",
    )
    done = await wait_for_end(gql, runner, run["id"])
    assert done["status"] == "COMPLETED", done
    assert done["outputs"] == {"answer": ["Hello from the model."]}
    [request] = stand_in.requests
    assert request["headers"]["Authorization"] == f"Bearer {own_secret}"
    assert request["json"]["messages"] == [{"role": "user", "content": "why is the sky blue"}]
    # gpt-4o-mini's price, less the reward for a first run from the library.
    reward = settings.ONBOARDING_REWARDS["MARKETPLACE_RUN_AGENT"]
    assert await _credits(gql, runner) == runner_credits - 2 + reward
    assert await _credits(gql, maker) == maker_credits
    usage = (await gql.ok(HISTORY, token=runner.token))["creditHistory"]["transactions"]
    assert {"amount": -2, "usageGraphId": listed["id"], "usageExecutionId": run["id"]} in usage
    [listed_key] = (await gql.ok(LIST_CREDENTIALS, {"p": "openai"}, token=runner.token))[
        "credentials"
    ]
    assert listed_key["lastUsedAt"] is not None
    steps = (await gql.ok(ONBOARDING, token=runner.token))["onboarding"]["completedSteps"]
    assert {"MARKETPLACE_ADD_AGENT", "MARKETPLACE_RUN_AGENT"} <= set(steps)

    # The run is B's alone; A's other graph and runs stay absent to B.
    assert (await gql.ok(EXECUTION, {"id": run["id"]}, token=maker.token))["execution"] is None
    maker_runs = (await gql.ok(EXECUTIONS, {"g": listed["id"]}, token=maker.token))["executions"]
    assert [e["node"]["id"] for e in maker_runs["edges"]] == [maker_run["id"]]
    runner_runs = (await gql.ok(EXECUTIONS, {"g": listed["id"]}, token=runner.token))["executions"]
    assert [e["node"]["id"] for e in runner_runs["edges"]] == [run["id"]]
    for absent in (maker_run["id"], private_run["id"]):
        assert (await gql.ok(EXECUTION, {"id": absent}, token=runner.token))["execution"] is None
    assert (await gql.ok(GET, {"id": private["id"]}, token=runner.token))["graph"] is None
    assert (await gql.ok(VERSIONS, {"id": private["id"]}, token=runner.token))[
        "graphVersions"
    ] == []
    empty = (await gql.ok(EXECUTIONS, {"g": private["id"]}, token=runner.token))["executions"]
    assert empty["totalCount"] == 0
    assert (await gql.ok(GRAPHS, token=runner.token))["graphs"]["totalCount"] == 0
    error = await _run_error(gql, runner, private["id"], inputs={"text": "x"})
    assert error["extensions"]["code"] == "NOT_FOUND"

    # The store counts runs by anyone.
    agents = (await gql.ok(RECOMMENDED, token=runner.token))["recommendedAgents"]
    assert next(a for a in agents if a["id"] == agent["id"])["runs"] == 2

    # Deleted credentials: the next run fails validation, nothing crashes.
    await gql.ok(DELETE_CREDENTIALS, {"id": own_key["id"]}, token=runner.token)
    error = await _run_error(
        gql, runner, listed["id"], inputs={"topic": "b"}, creds={"llm_credentials": own_key["id"]}
    )
    assert error["extensions"]["nodeErrors"] == {
        llm_node: {"llm_credentials": "no such credentials"}
    }


async def test_credentials_deleted_during_a_run_fail_the_node_not_the_worker(stack, new_user):
    gql = stack.gql
    person = new_user()
    spec = llm_graph("slow summarizer", wait_seconds=3)
    graph = await create_graph(gql, person, spec)
    ids = node_ids(spec, graph)
    key = await create_credentials(gql, person)
    run = await execute(
        gql, person, graph["id"], inputs={"topic": "t"}, creds={"llm_credentials": key["id"]}
    )
    await wait_for_node(gql, person, run["id"], ids["wait"], {"RUNNING"})
    await gql.ok(DELETE_CREDENTIALS, {"id": key["id"]}, token=person.token)
    assert not await StoredCredentials.filter(id=key["id"]).exists()
    done = await wait_for_end(gql, person, run["id"])
    assert done["status"] == "FAILED"
    [llm_run] = [n for n in done["nodeExecutions"] if n["nodeId"] == ids["llm"]]
    assert llm_run["error"] == "the credentials for llm_credentials no longer exist"
    # The same worker goes on running.
    fresh = await create_credentials(gql, person)
    again = await execute(
        gql, person, graph["id"], inputs={"topic": "t"}, creds={"llm_credentials": fresh["id"]}
    )
    assert (await wait_for_end(gql, person, again["id"]))["status"] == "COMPLETED"
