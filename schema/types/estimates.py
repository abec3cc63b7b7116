"""estimateExecution's answer: a line per node run, totals, history and the balance."""

from __future__ import annotations

import strawberry

from app.services.estimates import Estimate, NodeEstimate


@strawberry.type(description="What one run of one node may cost, in credits.")
class NodeCostEstimate:
    node_id: strawberry.ID
    block_id: strawberry.ID
    block_name: str
    graph_id: strawberry.ID = strawberry.field(
        description="The graph the node belongs to: the estimated one or a sub-graph."
    )
    graph_version: int
    depth: int = strawberry.field(description="0 for the graph's own nodes, 1 for a sub-graph's…")
    fixed_credits: int = strawberry.field(
        description="RUN and BYTE costs its known inputs fix, charged before it runs."
    )
    per_second_credits: int = strawberry.field(
        description="Its post-paid cost per second of run time (the most it may be)."
    )
    min_credits: int = strawberry.field(description="The least one run of it costs.")
    max_credits: int | None = strawberry.field(
        description="The most one run of it costs; null when nothing bounds it."
    )
    may_run_more_than_once: bool = strawberry.field(
        description="In a loop or below a block yielding many values (ForEach)."
    )
    note: str | None

    @classmethod
    def from_line(cls, line: NodeEstimate) -> NodeCostEstimate:
        costs = line.costs
        return cls(
            node_id=strawberry.ID(str(line.node_id)),
            block_id=strawberry.ID(str(line.block_id)),
            block_name=line.block_name,
            graph_id=strawberry.ID(str(line.graph_id)),
            graph_version=line.graph_version,
            depth=line.depth,
            fixed_credits=costs.fixed,
            per_second_credits=costs.per_second_max,
            min_credits=costs.min_total,
            max_credits=costs.max_total,
            may_run_more_than_once=line.may_run_more_than_once,
            note=line.note,
        )


@strawberry.type(description="Real costs of recent completed runs of this graph version.")
class CostHistory:
    run_count: int = strawberry.field(description="Completed runs looked at (the last 20 at most).")
    median_credits: int
    p90_credits: int = strawberry.field(description="90th percentile (nearest rank).")


@strawberry.type(description="What a run will cost, before running it (1 credit = 1 US cent).")
class ExecutionEstimate:
    graph_id: strawberry.ID
    graph_version: int
    nodes: list[NodeCostEstimate] = strawberry.field(
        description="One line per node, sub-graphs' nodes included; each is one run of it."
    )
    fixed_credits: int = strawberry.field(
        description="The sum of the nodes' fixed costs, each node running once."
    )
    min_credits: int = strawberry.field(
        description="The least the run costs if every node runs once."
    )
    max_credits: int | None = strawberry.field(
        description=(
            "The most the run costs; null when something has no bound (a node that may run "
            "more than once, a post-paid cost with no known end, a sub-graph not looked into)."
        )
    )
    history: CostHistory | None = strawberry.field(
        description="Null until the graph version has a completed run."
    )
    typical_credits: int = strawberry.field(description="The history's median, else minCredits.")
    balance: int = strawberry.field(description="The caller's balance now.")
    balance_after_typical_run: int

    @classmethod
    def from_estimate(cls, estimate: Estimate) -> ExecutionEstimate:
        history = estimate.history
        return cls(
            graph_id=strawberry.ID(str(estimate.graph_id)),
            graph_version=estimate.graph_version,
            nodes=[NodeCostEstimate.from_line(line) for line in estimate.nodes],
            fixed_credits=estimate.fixed,
            min_credits=estimate.minimum,
            max_credits=estimate.maximum,
            history=(
                CostHistory(
                    run_count=history.run_count,
                    median_credits=history.median,
                    p90_credits=history.p90,
                )
                if history
                else None
            ),
            typical_credits=estimate.typical,
            balance=estimate.balance,
            balance_after_typical_run=estimate.balance - estimate.typical,
        )
