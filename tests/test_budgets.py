"""executeGraph(maxCredits): a run ends FAILED with "Budget exceeded" before the
charge that would take it past its budget, up-front, per-second and sub-graph
charges alike; the balance never drops by more than the budget."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator

import pytest

from app.models import CreditTransaction, CreditTransactionType, Execution, NodeExecution
from tests.agent_helpers import LlmStack, llm_stack
from tests.conftest import TEST_ENV
from tests.execution_helpers import OwnStack, wait_for_end, wait_for_node
from tests.graph_builders import create_graph, link, node, node_ids
from tests.test_schedules import wait_until

ME = "{ me { credits } }"
STOP = "mutation($id: ID!) { stopExecution(id: $id) { id } }"
# A worker frozen this long, less than its lease (workers/lease.py): it resumes its run.
STALL_SECONDS = 6
EXECUTE = """mutation($id: ID!, $inputs: JSON! = {}, $max: Int) {
  executeGraph(graphId: $id, inputs: $inputs, maxCredits: $max) { id status maxCredits } }"""


@pytest.fixture(scope="module")
async def stack(database) -> AsyncIterator[LlmStack]:
    """A worker whose HttpRequest may reach the local stand-in (1 credit a request)."""
    async with llm_stack("budgets") as running:
        yield running


async def credits(gql, user) -> int:
    return (await gql.ok(ME, token=user.token))["me"]["credits"]


async def run(gql, user, graph_id: str, max_credits: int | None, **inputs) -> dict:
    variables = {"id": graph_id, "inputs": inputs, "max": max_credits}
    started = (await gql.ok(EXECUTE, variables, token=user.token))["executeGraph"]
    assert started["maxCredits"] == max_credits
    return await wait_for_end(gql, user, started["id"], timeout=60)


def requests_graph(url: str, count: int) -> dict:
    """`count` independent HttpRequest nodes: they start together."""
    return {
        "name": "fan out",
        "nodes": [node(f"http{i}", "HttpRequest", url=f"{url}?n={i}") for i in range(count)],
        "links": [],
    }


def wait_graph(seconds: float) -> dict:
    return {
        "name": "wait",
        "nodes": [
            node("in", "AgentInput", name="text", type="string", value="hi"),
            node("wait", "Wait", seconds=seconds),
            node("out", "AgentOutput", name="result"),
        ],
        "links": [link("in", "result", "wait", "input"), link("wait", "output", "out", "value")],
    }


async def usage_total(execution_ids: list[str]) -> int:
    amounts = await CreditTransaction.filter(
        usage_execution_id__in=execution_ids, type=CreditTransactionType.USAGE
    ).values_list("amount", flat=True)
    return -sum(amounts)


async def test_up_front_charges_stop_at_the_budget(stack, new_user):
    gql = stack.gql
    user = new_user()
    before = await credits(gql, user)
    graph = await create_graph(gql, user, requests_graph(stack.stand_in.echo_url, 6))
    done = await run(gql, user, graph["id"], 4)
    assert done["status"] == "FAILED"
    assert done["stats"]["error"].startswith("Budget exceeded"), done["stats"]
    # Exactly the budget: four requests charged, the fifth refused before its charge.
    assert before - await credits(gql, user) == 4
    assert await usage_total([done["id"]]) == 4
    assert done["stats"]["cost"] == 4
    # The nodes whose charge did not fit (those started together with the fifth too)
    # show why; none of them ran.
    refused = [n for n in done["nodeExecutions"] if n["error"] == "Budget exceeded"]
    assert refused and all(n["status"] == "FAILED" and n["startedAt"] is None for n in refused)


async def test_a_stop_racing_a_budget_failure_keeps_every_charge_on_its_node(stack, new_user):
    """stopExecution arrives while the run is ending FAILED on its budget: nodes
    whose up-front charge is under way are cancelled twice (by the budget failure,
    then by the stop). Every charge made shows on its node and in the run's cost,
    and the run is never charged past its budget."""
    gql = stack.gql
    user = new_user()
    graph = await create_graph(gql, user, requests_graph(stack.stand_in.echo_url, 30))
    for charges_before_stop in (0, 1, 2, 4, 6, 8, 10, 11):
        variables = {"id": graph["id"], "inputs": {}, "max": 12}
        started = (await gql.ok(EXECUTE, variables, token=user.token))["executeGraph"]

        async def charged(execution_id=started["id"], at_least=charges_before_stop):
            return await usage_total([execution_id]) >= at_least

        await wait_until(charged, what=f"{charges_before_stop} charges")
        await gql.ok(STOP, {"id": started["id"]}, token=user.token)
        done = await wait_for_end(gql, user, started["id"], timeout=60)
        assert done["status"] in {"FAILED", "TERMINATED"}
        total = await usage_total([done["id"]])
        rows = await NodeExecution.filter(execution_id=done["id"]).values_list("cost", flat=True)
        shown = (done["stats"] or {}).get("cost", 0)
        assert (sum(rows), shown) == (total, total), (charges_before_stop, done["stats"])
        assert total <= 12


async def test_a_budget_the_run_fits_in_changes_nothing(stack, new_user):
    gql = stack.gql
    user = new_user()
    before = await credits(gql, user)
    graph = await create_graph(gql, user, requests_graph(stack.stand_in.echo_url, 3))
    done = await run(gql, user, graph["id"], 3)
    assert done["status"] == "COMPLETED" and done["stats"]["cost"] == 3
    assert before - await credits(gql, user) == 3


async def test_per_second_costs_stop_at_the_budget(gql, user, worker):
    """A 60 s Wait (1 credit a second) under a budget of 3 ends after about 3 s,
    charged 3: never the minute it asked for."""
    before = await credits(gql, user)
    graph = await create_graph(gql, user, wait_graph(60))
    done = await run(gql, user, graph["id"], 3)
    assert done["status"] == "FAILED"
    assert done["stats"]["error"].startswith("Budget exceeded")
    assert before - await credits(gql, user) == 3
    wait = next(n for n in done["nodeExecutions"] if n["error"] == "Budget exceeded")
    assert wait["status"] == "FAILED"
    assert done["stats"]["cost"] == 3


async def test_sub_graph_charges_count_against_the_parents_budget(gql, user, worker):
    before = await credits(gql, user)
    child = await create_graph(gql, user, wait_graph(60))
    parent = await create_graph(
        gql,
        user,
        {
            "name": "parent",
            "nodes": [
                node("sub", "SubGraph", graph_id=child["id"], graph_version=1, inputs={}),
                node("out", "AgentOutput", name="result"),
            ],
            "links": [link("sub", "result", "out", "value")],
        },
    )
    done = await run(gql, user, parent["id"], 2)
    assert done["status"] == "FAILED"
    assert done["stats"]["error"].startswith("Budget exceeded"), done["stats"]
    assert before - await credits(gql, user) == 2
    children = await Execution.filter(parent_execution_id=done["id"])
    assert len(children) == 1 and children[0].status == "FAILED"
    assert children[0].max_credits is None  # the budget is the root's
    assert await usage_total([done["id"], str(children[0].id)]) == 2


@pytest.mark.parametrize("budget", [0, -5])
async def test_a_budget_must_be_positive_and_a_refused_one_starts_nothing(
    gql, user, budget, worker
):
    graph = await create_graph(gql, user, wait_graph(0))
    before = await credits(gql, user)
    runs_before = await Execution.filter(user_id=user.id).count()
    error = await gql.error(EXECUTE, {"id": graph["id"], "max": budget}, token=user.token)
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert "maxCredits" in error["message"]
    assert await Execution.filter(user_id=user.id).count() == runs_before
    assert await credits(gql, user) == before


async def test_the_budget_shows_on_the_execution(gql, user, worker):
    graph = await create_graph(gql, user, wait_graph(0))
    done = await run(gql, user, graph["id"], 50)
    assert done["status"] == "COMPLETED"
    shown = await gql.ok(
        "query($id: ID!) { execution(id: $id) { maxCredits } }",
        {"id": done["id"]},
        token=user.token,
    )
    assert shown["execution"]["maxCredits"] == 50
    without = await run(gql, user, graph["id"], None)
    assert without["status"] == "COMPLETED"


@pytest.fixture(scope="module")
async def own_stack(database) -> AsyncIterator[OwnStack]:
    own = OwnStack(TEST_ENV, "budget-crash")
    await own.start()
    try:
        yield own
    finally:
        await own.stop()


async def test_a_resumed_run_counts_what_it_was_charged_before_the_crash(own_stack, new_user):
    """Worker A runs a 1 s Wait (charged 1) and dies while a 60 s Wait runs under a
    budget of 4; worker B resumes the run from the ledger's count: 3 credits left,
    so the long Wait is stopped after 3 s and the run was charged 4 in all."""
    gql = own_stack.gql
    user = new_user()
    spec = {
        "name": "crash under a budget",
        "nodes": [
            node("short", "Wait", input="x", seconds=1),
            node("long", "Wait", seconds=60),
        ],
        "links": [link("short", "output", "long", "input")],
    }
    graph = await create_graph(gql, user, spec)
    ids = node_ids(spec, graph)
    before = await credits(gql, user)
    first, second = own_stack.worker(), own_stack.worker()
    await first.start()
    try:
        variables = {"id": graph["id"], "inputs": {}, "max": 4}
        started = (await gql.ok(EXECUTE, variables, token=user.token))["executeGraph"]
        await wait_for_node(gql, user, started["id"], ids["long"], {"RUNNING"})
        first.kill()  # SIGKILL: no clean-up at all
        await second.start()
        done = await wait_for_end(gql, user, started["id"], timeout=60)
    finally:
        first.kill()
        await second.stop()
    assert f"resuming execution {started['id']}" in second.log()
    assert done["status"] == "FAILED"
    assert done["stats"]["error"].startswith("Budget exceeded")
    assert before - await credits(gql, user) == 4
    assert await usage_total([done["id"]]) == 4


async def test_a_stalled_worker_charges_the_run_time_a_budget_has_room_for(own_stack, new_user):
    """The worker is frozen (SIGSTOP: its event loop stops, as under a long GC
    pause or a starved CPU) while a 5 s Wait runs under a roomy budget: when it
    thaws the wait is over, having run past the seconds it held. It is charged
    its run time like a run without a budget, not just the seconds it held."""
    gql = own_stack.gql
    user = new_user()
    spec = {"name": "stalled", "nodes": [node("wait", "Wait", input="x", seconds=5)], "links": []}
    graph = await create_graph(gql, user, spec)
    ids = node_ids(spec, graph)
    before = await credits(gql, user)
    worker = own_stack.worker()
    await worker.start()
    try:
        variables = {"id": graph["id"], "inputs": {}, "max": 100}
        started = (await gql.ok(EXECUTE, variables, token=user.token))["executeGraph"]
        await wait_for_node(gql, user, started["id"], ids["wait"], {"RUNNING"})
        worker.process.send_signal(signal.SIGSTOP)
        try:
            await asyncio.sleep(STALL_SECONDS)  # the stall itself, not a wait for anything
        finally:
            worker.process.send_signal(signal.SIGCONT)
        done = await wait_for_end(gql, user, started["id"], timeout=60)
    finally:
        await worker.stop()
    assert done["status"] == "COMPLETED", done
    # It ran at least the stall (less than its lease: no other runner took over).
    assert done["stats"]["cost"] >= STALL_SECONDS
    assert before - await credits(gql, user) == done["stats"]["cost"] <= 100
