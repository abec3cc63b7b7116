"""estimateExecution: what a run of a graph version will cost, before running it.

- Per node (sub-graphs' nodes included, ESTIMATE_MAX_DEPTH levels down): the
  costs fixed by its known inputs (app/services/cost_ranges.py), and the range
  once per-second costs and values arriving on linked pins count. Each line is
  one run of the node; a node in a loop or below a block that yields many values
  (ForEach) may run more often, so the total has no maximum when such a node
  costs anything.
- History: the median and 90th percentile (nearest rank: both are costs some run
  really had) of the last HISTORY_RUNS completed runs of this graph version by
  this user, sub-graph runs included in their cost.
- The balance after the typical run: the median when there is history, else the
  least the run can cost.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from typing import Any

from app.blocks.registry import get_block
from app.errors import bad_input
from app.models import Execution, ExecutionStatus, Graph, Link, Node
from app.services import ledger, run_requests
from app.services.cost_ranges import NodeCostRange, node_cost_range
from app.services.executions import check_run_inputs
from app.services.graphs import get_graph, validation_error
from app.settings import Settings

HISTORY_RUNS = 20
# Sub-graph levels whose nodes are estimated; deeper ones count as unknown.
ESTIMATE_MAX_DEPTH = 5
# Node lines one estimate gives at most (a wide tree of sub-graphs stops here).
MAX_ESTIMATE_NODES = 2000


@dataclass
class NodeEstimate:
    node_id: uuid.UUID
    block_id: uuid.UUID
    block_name: str
    graph_id: uuid.UUID
    graph_version: int
    depth: int
    costs: NodeCostRange
    may_run_more_than_once: bool
    note: str | None = None


@dataclass
class CostHistory:
    run_count: int
    median: int
    p90: int


@dataclass
class Estimate:
    graph_id: uuid.UUID
    graph_version: int
    nodes: list[NodeEstimate] = field(default_factory=list)
    history: CostHistory | None = None
    balance: int = 0
    # Set when a part of the run could not be looked into (too deep, too many nodes,
    # a sub-graph only known at run time): the maximum is then unknown.
    incomplete: bool = False

    @property
    def fixed(self) -> int:
        return sum(line.costs.fixed for line in self.nodes)

    @property
    def minimum(self) -> int:
        return sum(line.costs.min_total for line in self.nodes)

    @property
    def maximum(self) -> int | None:
        if self.incomplete:
            return None
        total = 0
        for line in self.nodes:
            most = line.costs.max_total
            if most is None or (line.may_run_more_than_once and most > 0):
                return None
            total += most
        return total

    @property
    def typical(self) -> int:
        return self.history.median if self.history else self.minimum


def _nearest_rank(ordered: list[int], share: float) -> int:
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


async def cost_history(user_id: uuid.UUID, graph: Graph) -> CostHistory | None:
    stats = await (
        Execution.filter(
            user_id=user_id,
            graph_id=graph.graph_id,
            graph_version=graph.version,
            status=ExecutionStatus.COMPLETED,
            parent_execution_id=None,
            is_deleted=False,
        )
        .order_by("-ended_at", "-id")
        .limit(HISTORY_RUNS)
        .values_list("stats", flat=True)
    )
    costs = sorted(int((s or {}).get("cost", 0)) for s in stats)
    if not costs:
        return None
    return CostHistory(len(costs), _nearest_rank(costs, 0.5), _nearest_rank(costs, 0.9))


def _on_cycles(below: dict[uuid.UUID, set[uuid.UUID]]) -> set[uuid.UUID]:
    """Nodes on a cycle: those of a strongly connected component of two or more
    nodes, or with a link to themselves (Tarjan's algorithm, iterative: a long
    chain must not exhaust the stack)."""
    index: dict[uuid.UUID, int] = {}
    low: dict[uuid.UUID, int] = {}
    on_stack: set[uuid.UUID] = set()
    stack: list[uuid.UUID] = []
    cyclic: set[uuid.UUID] = set()
    for root in below:
        if root in index:
            continue
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        work = [(root, iter(below.get(root, ())))]
        while work:
            current, successors = work[-1]
            advanced = False
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(below.get(successor, ()))))
                    advanced = True
                    break
                if successor in on_stack:
                    low[current] = min(low[current], index[successor])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[current])
            if low[current] == index[current]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == current:
                        break
                if len(component) > 1 or current in below.get(current, ()):
                    cyclic.update(component)
    return cyclic


def _repeating(nodes: list[Node], links: list[Link]) -> set[uuid.UUID]:
    """Nodes on a cycle or below a node that yields many values, and all below them.
    Linear in nodes and links (a walk from every node was quadratic: seconds for a
    dense graph of 1,000 nodes)."""
    below: dict[uuid.UUID, set[uuid.UUID]] = {node.id: set() for node in nodes}
    for link in links:
        below.setdefault(link.source_id, set()).add(link.sink_id)
    starts = _on_cycles(below)
    for node in nodes:
        block = get_block(node.block_id)
        if block is not None and block.yields_many:
            starts |= below.get(node.id, set())
    repeating: set[uuid.UUID] = set()
    pending = list(starts)
    while pending:
        current = pending.pop()
        if current not in repeating:
            repeating.add(current)
            pending.extend(below.get(current, ()))
    return repeating


@dataclass
class _Shape:
    nodes: list[Node]
    linked: dict[uuid.UUID, set[str]]  # node id -> its linked input pins
    repeating: set[uuid.UUID]


class _Walk:
    def __init__(self, user_id: uuid.UUID, estimate: Estimate) -> None:
        self.user_id = user_id
        self.estimate = estimate
        # A graph version that many SubGraph nodes run is looked up and read once.
        self.shapes: dict[int, _Shape] = {}
        self.graphs: dict[tuple[str, int], Graph | None] = {}

    async def shape(self, graph: Graph) -> _Shape:
        if graph.id not in self.shapes:
            nodes = await Node.filter(graph_id=graph.id).order_by("position", "id")
            links = await Link.filter(graph_id=graph.id)
            linked: dict[uuid.UUID, set[str]] = {}
            for link in links:
                linked.setdefault(link.sink_id, set()).add(link.sink_name)
            self.shapes[graph.id] = _Shape(nodes, linked, _repeating(nodes, links))
        return self.shapes[graph.id]

    async def graph(self, graph: Graph, inputs: dict[str, Any], depth: int, repeats: bool) -> None:
        shape = await self.shape(graph)
        linked, repeating = shape.linked, shape.repeating
        for node in shape.nodes:
            if len(self.estimate.nodes) >= MAX_ESTIMATE_NODES:
                self.estimate.incomplete = True
                return
            block = get_block(node.block_id)
            if block is None:
                continue  # refused by validation before we get here
            unknown = linked.get(node.id, set())
            known = {k: v for k, v in (node.input_default or {}).items() if k not in unknown}
            if block.name == "AgentInput" and known.get("name") in inputs:
                known["value"] = inputs[known["name"]]
            line = NodeEstimate(
                node_id=node.id,
                block_id=block.id,
                block_name=block.name,
                graph_id=graph.graph_id,
                graph_version=graph.version,
                depth=depth,
                costs=node_cost_range(block, known, unknown),
                may_run_more_than_once=repeats or node.id in repeating,
            )
            self.estimate.nodes.append(line)
            if block.name == "SubGraph":
                await self.sub_graph(line, known, unknown, depth)

    async def sub_graph(
        self, line: NodeEstimate, known: dict[str, Any], unknown: set[str], depth: int
    ) -> None:
        if {"graph_id", "graph_version", "inputs"} & unknown:
            line.note = "its graph or inputs arrive during the run: not estimated"
            self.estimate.incomplete = True
            return
        if depth + 1 > ESTIMATE_MAX_DEPTH:
            line.note = f"sub-graphs deeper than {ESTIMATE_MAX_DEPTH} levels are not estimated"
            self.estimate.incomplete = True
            return
        version = known.get("graph_version")
        child = None
        if isinstance(version, int) and not isinstance(version, bool):
            key = (str(known.get("graph_id")), version)
            if key not in self.graphs:
                self.graphs[key] = await get_graph(self.user_id, *key)
            child = self.graphs[key]
        child_inputs = known.get("inputs")
        if child is None or not isinstance(child_inputs, dict):
            line.note = "its graph is not one you can run: the node will fail"
            return
        await self.graph(child, child_inputs, depth + 1, line.may_run_more_than_once)


async def estimate_execution(
    settings: Settings, user_id: uuid.UUID, graph_id: str, version: int | None, inputs: Any
) -> Estimate:
    """NOT_FOUND for a graph the user cannot run, BAD_USER_INPUT for inputs that are
    not an object, GRAPH_VALIDATION_FAILED for inputs executeGraph would refuse."""
    if not isinstance(inputs, dict):
        raise bad_input("inputs must be an object", field="inputs")
    request = await run_requests.prepare(user_id, graph_id, version, inputs, {})
    graph = request.graph
    validation = check_run_inputs(settings, await Node.filter(graph_id=graph.id), inputs)
    if not validation.valid:
        raise validation_error(validation)
    estimate = Estimate(graph_id=graph.graph_id, graph_version=graph.version)
    await _Walk(user_id, estimate).graph(graph, inputs, 0, False)
    estimate.history = await cost_history(user_id, graph)
    estimate.balance = await ledger.get_balance(user_id)
    return estimate
