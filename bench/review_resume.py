"""Review resume latency: from reviewNode (approve) to the run COMPLETED.

Graph: AgentInput -> HumanReview -> AgentOutput, run by an `agentgraph worker`
process. Each run waits in REVIEW (its job has returned); the figure is the
median time from sending reviewNode to the execution being COMPLETED in the
database: the decision's transaction, its event, a new job, the worker taking
the runner lock, resuming from the stored rows and finishing.

Floor (same run, same stack): executeGraph of AgentInput -> StoreValue ->
AgentOutput to COMPLETED, the same path from a fresh job without any review.
"""

from __future__ import annotations

import asyncio
import time

from bench.support import bench_stack, figure_line, median, ms, signed_in_user

RUNS = 15
REVIEW = "mutation($id: ID!) { reviewNode(nodeExecutionId: $id, approve: true) { status } }"


def graph(middle: str) -> dict:
    from tests.graph_builders import link, node

    port = "approved" if middle == "HumanReview" else "output"
    pin = "data" if middle == "HumanReview" else "input"
    return {
        "name": middle,
        "nodes": [
            node("in", "AgentInput", name="text", type="string"),
            node("mid", middle),
            node("out", "AgentOutput", name="result"),
        ],
        "links": [link("in", "result", "mid", pin), link("mid", port, "out", "value")],
    }


async def until(execution_id: str, status: str, deadline: float) -> None:
    from app.models import Execution

    while (await Execution.get(id=execution_id)).status != status:
        assert time.monotonic() < deadline, f"{execution_id} never {status}"
        await asyncio.sleep(0.005)


async def main() -> None:
    from app.models import NodeReview
    from tests.execution_helpers import execute
    from tests.graph_builders import create_graph
    from tests.harness import GraphQLClient

    async with bench_stack(start_worker=True) as stack:
        gql = GraphQLClient(stack.server.base_url)
        try:
            user = await signed_in_user(gql)
            reviewed = await create_graph(gql, user, graph("HumanReview"))
            plain = await create_graph(gql, user, graph("StoreValue"))
            resumes, fresh = [], []
            for _ in range(RUNS):
                run = await execute(gql, user, reviewed["id"], {"text": "x"})
                await until(run["id"], "REVIEW", time.monotonic() + 60)
                review = await NodeReview.get(execution_id=run["id"])
                started = time.perf_counter()
                await gql.ok(REVIEW, {"id": str(review.id)}, token=user.token)
                await until(run["id"], "COMPLETED", time.monotonic() + 60)
                resumes.append(time.perf_counter() - started)

                started = time.perf_counter()
                run = await execute(gql, user, plain["id"], {"text": "x"})
                await until(run["id"], "COMPLETED", time.monotonic() + 60)
                fresh.append(time.perf_counter() - started)
        finally:
            await gql.aclose()

    latency, floor = median(resumes), median(fresh)
    print(f"review resume, {RUNS} runs each")
    print(f"  reviewNode -> COMPLETED: median {ms(latency)}")
    print(f"  executeGraph -> COMPLETED without review (floor): median {ms(floor)}")
    print(f"review_resume: {ms(latency)}, {latency / floor:.2f}x the floor")
    print(figure_line("review_resume_latency", latency * 1000, "ms", floor * 1000, latency / floor))


if __name__ == "__main__":
    asyncio.run(main())
