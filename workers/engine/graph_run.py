"""Running one graph execution (SEMANTICS.md §7).

State lives in the database so another worker can resume after a crash:
- a node execution is INCOMPLETE while it waits for values on some linked
  pins; a value arriving on a pin goes to the oldest INCOMPLETE execution of
  that node still missing the pin, else starts a new one (per-pin FIFO);
- once every linked pin holds a value it is QUEUED, then RUNNING, then
  COMPLETED or FAILED (TERMINATED when stopped);
- static link values are kept on the execution and reused by every later run
  of their sink;
- a node's completion, its outputs, the values it hands downstream and the
  execution's outputs are written in one transaction, so a resumed run never
  re-runs a completed node and never loses or doubles a value. A node that was
  QUEUED or RUNNING when its worker died runs again; its charge is keyed by
  its node execution id, so it is never charged twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from tortoise.transactions import in_transaction

from app.blocks.base import ERROR_PIN, Block, BlockError, BlockRunContext, InvalidBlockInput
from app.blocks.costs import cost_after_run, cost_before_run
from app.blocks.registry import get_block
from app.clock import utcnow
from app.errors import AppError, ErrorCode
from app.events import EventReader
from app.models import (
    TERMINAL_STATUSES,
    CreditTransactionType,
    Execution,
    ExecutionStatus,
    Graph,
    Link,
    Node,
    NodeExecution,
)
from app.services import ledger
from app.services.credentials import node_credentials
from app.services.executions import node_execution_snapshot, publish_status
from app.services.graphs import get_graph
from app.storable import first_unstorable
from workers.engine.context import EngineContext
from workers.engine.stats import execution_stats

log = logging.getLogger(__name__)

INSUFFICIENT_CREDITS = "Insufficient credits"
# A sub-graph run's id follows from the node execution that runs it, so a
# resumed SubGraph node resumes the same child instead of starting another.
_CHILD_NAMESPACE = uuid.UUID("6f4c2f0e-8a51-4d7e-9a55-0f8f5b9e3c21")


@dataclass
class _Pending:
    """An INCOMPLETE node execution: values gathered so far."""

    id: uuid.UUID
    node_id: uuid.UUID
    inputs: dict[str, Any]
    arrival: int


@dataclass
class _Topology:
    nodes: dict[uuid.UUID, Node]
    blocks: dict[uuid.UUID, Block]
    links_from: dict[uuid.UUID, list[Link]]
    # sink node -> pin -> whether its link is static
    linked_pins: dict[uuid.UUID, dict[str, bool]] = field(default_factory=dict)

    @classmethod
    async def load(cls, execution: Execution) -> _Topology:
        graph = await Graph.get_or_none(
            graph_id=execution.graph_id, version=execution.graph_version
        )
        if graph is None:
            raise BlockError("the graph version of this run no longer exists")
        nodes = {n.id: n for n in await Node.filter(graph_id=graph.id)}
        blocks = {}
        for node in nodes.values():
            block = get_block(node.block_id)
            if block is None:
                raise BlockError(f"block {node.block_id} no longer exists")
            blocks[node.id] = block
        topology = cls(nodes=nodes, blocks=blocks, links_from=defaultdict(list))
        for link in await Link.filter(graph_id=graph.id).order_by("position"):
            topology.links_from[link.source_id].append(link)
            pins = topology.linked_pins.setdefault(link.sink_id, {})
            pins[link.sink_name] = pins.get(link.sink_name, False) or link.is_static
        return topology

    def starting_nodes(self) -> list[Node]:
        """AgentInput nodes and nodes nothing links into run first."""
        return [
            node
            for node_id, node in self.nodes.items()
            if self.blocks[node_id].name == "AgentInput" or node_id not in self.linked_pins
        ]


class GraphRun:
    def __init__(
        self,
        engine: EngineContext,
        execution: Execution,
        ancestors: tuple[uuid.UUID, ...] = (),
    ) -> None:
        self.engine = engine
        self.execution = execution
        # Executions above a sub-graph run: its node events roll up to them.
        self.ancestors = ancestors
        self.lock = asyncio.Lock()
        self.pending: dict[uuid.UUID, list[_Pending]] = defaultdict(list)
        self.ready: list[NodeExecution] = []
        self.tasks: dict[asyncio.Task, NodeExecution] = {}
        # What cancelled node runs had yielded, for terminate() to keep.
        self.partial_outputs: dict[uuid.UUID, dict[str, list[Any]]] = {}
        self.arrival = 0
        self.failed = False
        self.out_of_credits = False
        self.topology: _Topology | None = None
        # Set once the run writes its end; a stop arriving after that lets it finish.
        self.finishing = False

    # ------------------------------------------------------------ lifecycle

    async def run(self) -> ExecutionStatus:
        """Runs (or resumes) the execution to its end; returns its final status."""
        execution = self.execution
        if execution.status in TERMINAL_STATUSES:
            await self._announce_end()
            return execution.status
        try:
            self.topology = await _Topology.load(execution)
        except BlockError as exc:
            return await self._finish(ExecutionStatus.FAILED, str(exc))
        if execution.status == ExecutionStatus.QUEUED:
            if not await self._start():
                return execution.status  # stopped before it could start
        else:
            await self._resume()
        try:
            await self._drive()
        except BaseException:
            # Cancelled (stop, shutdown) or an error outside any block: no node
            # task may outlive the run; their rows stay as stored, to resume from.
            await self._cancel_tasks()
            raise
        status = ExecutionStatus.FAILED if self.failed else ExecutionStatus.COMPLETED
        error = INSUFFICIENT_CREDITS if self.out_of_credits else None
        return await self._finish(status, error)

    async def terminate(
        self, status: ExecutionStatus = ExecutionStatus.TERMINATED, error: str = "Stopped"
    ) -> None:
        """Stop: cancel running nodes; everything unfinished ends TERMINATED,
        sub-graph runs included; the execution ends `status` with `error`."""
        await self._cancel_tasks()
        for child in await Execution.filter(
            parent_execution_id=self.execution.id,
            status__in=[ExecutionStatus.QUEUED, ExecutionStatus.RUNNING],
        ):
            await GraphRun(self.engine, child, (self.execution.id, *self.ancestors)).terminate()
        await self.execution.refresh_from_db()
        if self.execution.status in TERMINAL_STATUSES:
            return
        now = utcnow()
        unfinished = await NodeExecution.filter(
            execution_id=self.execution.id,
            status__in=[
                ExecutionStatus.INCOMPLETE,
                ExecutionStatus.QUEUED,
                ExecutionStatus.RUNNING,
            ],
        )
        await NodeExecution.filter(id__in=[n.id for n in unfinished]).update(
            status=ExecutionStatus.TERMINATED, ended_at=now
        )
        for node_execution in unfinished:
            outputs = self.partial_outputs.get(node_execution.id)
            if outputs:
                await NodeExecution.filter(id=node_execution.id).update(output_data=outputs)
                node_execution.output_data = outputs
            if node_execution.status != ExecutionStatus.INCOMPLETE:
                node_execution.status = ExecutionStatus.TERMINATED
                node_execution.ended_at = now
                await self._publish_node(node_execution)
                await self.engine.count("node_runs", ExecutionStatus.TERMINATED)
        await self._finish(status, error)

    async def _announce_end(self) -> None:
        """A worker that died between writing the end and publishing it left
        subscribers waiting: publish the end unless it is the last event."""
        reader = EventReader(self.engine.redis, self.engine.settings.REDIS_PREFIX)
        seq = await reader.current_seq(self.execution.id)
        last = await reader.after(self.execution.id, seq - 1) if seq else []
        if (
            last
            and last[-1].kind == "execution"
            and last[-1].data["execution"]["status"] == str(self.execution.status)
        ):
            return
        await publish_status(self.engine.publisher, self.execution)

    async def _start(self) -> bool:
        assert self.topology is not None
        now = utcnow()
        seeded: list[NodeExecution] = []
        async with in_transaction() as conn:
            moved = (
                await Execution.filter(id=self.execution.id, status=ExecutionStatus.QUEUED)
                .using_db(conn)
                .update(status=ExecutionStatus.RUNNING, started_at=now)
            )
            if not moved:  # stopped (or started elsewhere) meanwhile
                await self.execution.refresh_from_db(using_db=conn)
                return False
            for node in self.topology.starting_nodes():
                inputs = dict(node.input_default or {})
                # Issue 16: inputs set on one node for this run (a webhook's body).
                inputs.update((self.execution.node_inputs or {}).get(str(node.id), {}))
                if self.topology.blocks[node.id].name == "AgentInput":
                    name = inputs.get("name")
                    if name in self.execution.inputs:
                        inputs["value"] = self.execution.inputs[name]
                seeded.append(self._new_node_execution(node, inputs, ExecutionStatus.QUEUED))
            await NodeExecution.bulk_create(seeded, using_db=conn)
        self.execution.status = ExecutionStatus.RUNNING
        self.execution.started_at = now
        await publish_status(self.engine.publisher, self.execution)
        for node_execution in seeded:
            await self._publish_node(node_execution)
        self.ready.extend(seeded)
        return True

    async def _resume(self) -> None:
        rows = await NodeExecution.filter(execution_id=self.execution.id).order_by("arrival")
        for row in rows:
            self.arrival = max(self.arrival, row.arrival + 1)
            if row.status == ExecutionStatus.INCOMPLETE:
                self.pending[row.node_id].append(
                    _Pending(row.id, row.node_id, dict(row.input_data), row.arrival)
                )
            elif row.status in (ExecutionStatus.QUEUED, ExecutionStatus.RUNNING):
                # In flight when the last worker stopped: run it again.
                self.ready.append(row)
            elif row.status == ExecutionStatus.FAILED:
                self.failed = True
        log.info("resuming execution %s with %d node(s) to run", self.execution.id, len(self.ready))

    async def _drive(self) -> None:
        limit = self.engine.node_concurrency
        while True:
            while self.ready and len(self.tasks) < limit and not self.out_of_credits:
                node_execution = self.ready.pop(0)
                task = asyncio.create_task(self._run_node(node_execution))
                self.tasks[task] = node_execution
            if not self.tasks:
                return
            done, _ = await asyncio.wait(self.tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                self.tasks.pop(task)
                task.result()  # a bug in the engine must surface, not hang the run

    async def _cancel_tasks(self) -> None:
        for task in self.tasks:
            task.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks.clear()

    async def _finish(self, status: ExecutionStatus, error: str | None) -> ExecutionStatus:
        self.finishing = True
        execution = self.execution
        now = utcnow()
        if status != ExecutionStatus.TERMINATED:
            # Nodes never started because the run failed (credits ran out) end too.
            await NodeExecution.filter(
                execution_id=execution.id, status=ExecutionStatus.QUEUED
            ).update(status=ExecutionStatus.TERMINATED, ended_at=now)
        if error is None and status == ExecutionStatus.FAILED:
            first = (
                await NodeExecution.filter(execution_id=execution.id, status=ExecutionStatus.FAILED)
                .order_by("ended_at")
                .first()
            )
            error = first.error if first else "A node failed"
        execution.status = status
        execution.ended_at = now
        execution.error = error
        execution.started_at = execution.started_at or now
        execution.stats = await execution_stats(execution)
        await Execution.filter(id=execution.id).update(
            status=status,
            ended_at=now,
            error=error,
            stats=execution.stats,
            started_at=execution.started_at,
        )
        await publish_status(self.engine.publisher, execution)
        await self.engine.count("executions", status)
        return status

    # ------------------------------------------------------------ one node

    async def _run_node(self, node_execution: NodeExecution) -> None:
        assert self.topology is not None
        block = self.topology.blocks[node_execution.node_id]
        input_data = dict(node_execution.input_data)
        charged = 0
        try:
            charged = await self._charge_before(node_execution, block, input_data)
        except AppError as exc:
            if exc.code != ErrorCode.INSUFFICIENT_CREDITS:
                raise
            self.out_of_credits = True
            await self._complete(
                node_execution, {ERROR_PIN: [INSUFFICIENT_CREDITS]}, INSUFFICIENT_CREDITS, 0, 0.0
            )
            return
        now = utcnow()
        node_execution.status = ExecutionStatus.RUNNING
        node_execution.started_at = now
        await NodeExecution.filter(id=node_execution.id).update(
            status=ExecutionStatus.RUNNING, started_at=now
        )
        await self._publish_node(node_execution)
        outputs: dict[str, list[Any]] = {}
        error: str | None = None
        started = time.monotonic()
        try:
            typed = block.validate_input(input_data)
            context = BlockRunContext(
                settings=self.engine.settings,
                user_id=self.execution.user_id,  # type: ignore[attr-defined]
                graph_id=self.execution.graph_id,
                execution_id=self.execution.id,
                node_id=node_execution.node_id,
                node_execution_id=node_execution.id,
                run_sub_graph=self._sub_graph_runner(node_execution),
                # Issue 16: the run's stored credentials for this block's fields, decrypted.
                credentials=await node_credentials(self.engine.settings, self.execution, block),
            )
            async for pin, value in block.run(typed, context):
                outputs.setdefault(pin, []).append(value)
        except asyncio.CancelledError:
            # Stopped or shut down: the row stays RUNNING, so a worker resuming
            # after a shutdown runs it again; terminate() ends it on a stop.
            self.partial_outputs[node_execution.id] = outputs
            raise
        except InvalidBlockInput as exc:
            error = f"Invalid input: {exc}"
        except BlockError as exc:
            error = str(exc)
        except Exception as exc:
            log.warning("node %s raised", node_execution.id, exc_info=True)
            error = f"{type(exc).__name__}: {exc}"
        seconds = time.monotonic() - started
        unstorable = first_unstorable(outputs) if error is None else None
        if unstorable is not None:
            # e.g. a web page with U+0000: the database cannot keep it, so the
            # node fails with a clear message instead of the run retrying forever.
            problem, path = unstorable
            outputs, error = {}, f"Output cannot be stored: {problem} ({path})"
        if error is not None:
            outputs.setdefault(ERROR_PIN, []).append(error)
        charged += await self._charge_after(node_execution, block, input_data, seconds)
        await self._complete(node_execution, outputs, error, charged, seconds)

    async def _charge_before(
        self, node_execution: NodeExecution, block: Block, input_data: dict[str, Any]
    ) -> int:
        cost = cost_before_run(block.costs, input_data)
        if cost == 0:
            return 0
        entry = await ledger.record_transaction(
            self.execution.user_id,  # type: ignore[attr-defined]
            -cost,
            CreditTransactionType.USAGE,
            str(node_execution.id),
            description=f"{block.name} run",
            usage_graph_id=self.execution.graph_id,
            usage_execution_id=self.execution.id,
            usage_node_count=1,
        )
        await self.engine.after_charge(
            self.execution.user_id,  # type: ignore[attr-defined]
            entry.transaction.running_balance,
            cost,
        )
        return cost

    async def _charge_after(
        self,
        node_execution: NodeExecution,
        block: Block,
        input_data: dict[str, Any],
        seconds: float,
    ) -> int:
        cost = cost_after_run(block.costs, input_data, seconds)
        if cost == 0:
            return 0
        # Time already spent is owed even past zero.
        entry = await ledger.record_transaction(
            self.execution.user_id,  # type: ignore[attr-defined]
            -cost,
            CreditTransactionType.USAGE,
            f"{node_execution.id}:time",
            allow_negative=True,
            description=f"{block.name} run time",
            usage_graph_id=self.execution.graph_id,
            usage_execution_id=self.execution.id,
        )
        await self.engine.after_charge(
            self.execution.user_id,  # type: ignore[attr-defined]
            entry.transaction.running_balance,
            cost,
        )
        return cost

    # ------------------------------------------------------------ completion

    async def _complete(
        self,
        node_execution: NodeExecution,
        outputs: dict[str, list[Any]],
        error: str | None,
        cost: int,
        seconds: float,
    ) -> None:
        """Record the node's end and hand its outputs on, in one transaction."""
        assert self.topology is not None
        status = ExecutionStatus.FAILED if error else ExecutionStatus.COMPLETED
        now = utcnow()
        async with self.lock:
            created: list[NodeExecution] = []
            updated: dict[uuid.UUID, _Pending] = {}
            newly_ready: list[_Pending] = []
            static_changed = self._route(
                node_execution.node_id, outputs, created, updated, newly_ready
            )
            execution_outputs = self._collect_outputs(node_execution, outputs)
            queued = self._queued_rows(created, newly_ready, now)
            queued_by_id = {row.id: row for row in queued}
            created_ids = {row.id for row in created}
            async with in_transaction() as conn:
                await (
                    NodeExecution.filter(id=node_execution.id)
                    .using_db(conn)
                    .update(
                        status=status, output_data=outputs, ended_at=now, error=error, cost=cost
                    )
                )
                if created:
                    await NodeExecution.bulk_create(created, using_db=conn)
                for pending in updated.values():
                    if pending.id in created_ids:
                        continue
                    row = queued_by_id.get(pending.id)
                    if row is None:
                        await (
                            NodeExecution.filter(id=pending.id)
                            .using_db(conn)
                            .update(input_data=pending.inputs)
                        )
                    else:
                        await (
                            NodeExecution.filter(id=pending.id)
                            .using_db(conn)
                            .update(input_data=row.input_data, status=row.status, queued_at=now)
                        )
                execution_changes: dict[str, Any] = {}
                if execution_outputs is not None:
                    execution_changes["outputs"] = execution_outputs
                if static_changed:
                    execution_changes["static_inputs"] = self.execution.static_inputs
                if execution_changes:
                    await (
                        Execution.filter(id=self.execution.id)
                        .using_db(conn)
                        .update(**execution_changes)
                    )
            if execution_outputs is not None:
                self.execution.outputs = execution_outputs
        node_execution.status = status
        node_execution.output_data = outputs
        node_execution.ended_at = now
        node_execution.error = error
        node_execution.cost = cost
        if error:
            self.failed = True
        await self._publish_node(node_execution)
        await self.engine.count("node_runs", status)
        for row in queued:
            await self._publish_node(row)
            self.ready.append(row)

    def _route(
        self,
        source_id: uuid.UUID,
        outputs: dict[str, list[Any]],
        created: list[NodeExecution],
        updated: dict[uuid.UUID, _Pending],
        newly_ready: list[_Pending],
    ) -> bool:
        """Hand each output value along every link from its pin; returns whether a
        static value changed. Fills `created`/`updated`/`newly_ready`."""
        assert self.topology is not None
        static_changed = False
        for link in self.topology.links_from.get(source_id, []):
            for value in outputs.get(link.source_name, []):
                sink = link.sink_id
                if link.is_static:
                    statics = self.execution.static_inputs.setdefault(str(sink), {})
                    statics[link.sink_name] = value
                    static_changed = True
                    targets = list(self.pending[sink])
                    if not targets and self._only_static_pins(sink):
                        targets = [self._open_pending(sink, created)]
                    for pending in targets:
                        pending.inputs.setdefault(link.sink_name, value)
                        updated[pending.id] = pending
                else:
                    pending = next(
                        (p for p in self.pending[sink] if link.sink_name not in p.inputs), None
                    ) or self._open_pending(sink, created)
                    pending.inputs[link.sink_name] = value
                    updated[pending.id] = pending
                for pending in list(self.pending[sink]):
                    if self._is_ready(pending):
                        self.pending[sink].remove(pending)
                        newly_ready.append(pending)
        return static_changed

    def _open_pending(self, node_id: uuid.UUID, created: list[NodeExecution]) -> _Pending:
        assert self.topology is not None
        node = self.topology.nodes[node_id]
        row = self._new_node_execution(node, {}, ExecutionStatus.INCOMPLETE)
        created.append(row)
        pending = _Pending(row.id, node_id, row.input_data, row.arrival)
        self.pending[node_id].append(pending)
        return pending

    def _only_static_pins(self, node_id: uuid.UUID) -> bool:
        assert self.topology is not None
        return all(self.topology.linked_pins.get(node_id, {}).values())

    def _is_ready(self, pending: _Pending) -> bool:
        assert self.topology is not None
        statics = self.execution.static_inputs.get(str(pending.node_id), {})
        for pin, is_static in self.topology.linked_pins.get(pending.node_id, {}).items():
            if pin in pending.inputs:
                continue
            if is_static and pin in statics:
                pending.inputs[pin] = statics[pin]
                continue
            return False
        return True

    def _queued_rows(
        self, created: list[NodeExecution], newly_ready: list[_Pending], now
    ) -> list[NodeExecution]:
        """What just became QUEUED, with its full inputs (defaults under the values);
        rows created in this step are changed in place before they are inserted."""
        assert self.topology is not None
        rows = {row.id: row for row in created}
        result = []
        for pending in newly_ready:
            node = self.topology.nodes[pending.node_id]
            row = rows.get(pending.id) or NodeExecution(
                id=pending.id,
                execution_id=self.execution.id,
                node_id=pending.node_id,
                block_id=node.block_id,
                arrival=pending.arrival,
            )
            row.input_data = {**(node.input_default or {}), **pending.inputs}
            row.status = ExecutionStatus.QUEUED
            row.queued_at = now
            result.append(row)
        return result

    def _collect_outputs(
        self, node_execution: NodeExecution, outputs: dict[str, list[Any]]
    ) -> dict[str, list[Any]] | None:
        """AgentOutput values become the execution's outputs by name."""
        assert self.topology is not None
        if self.topology.blocks[node_execution.node_id].name != "AgentOutput":
            return None
        name = node_execution.input_data.get("name")
        values = outputs.get("output", [])
        if not isinstance(name, str) or not values:
            return None
        merged = {k: list(v) for k, v in (self.execution.outputs or {}).items()}
        merged.setdefault(name, []).extend(values)
        return merged

    def _new_node_execution(
        self, node: Node, inputs: dict[str, Any], status: ExecutionStatus
    ) -> NodeExecution:
        self.arrival += 1
        now = utcnow()
        return NodeExecution(
            id=uuid.uuid4(),
            execution_id=self.execution.id,
            node_id=node.id,
            block_id=node.block_id,
            status=status,
            input_data=inputs,
            output_data={},
            arrival=self.arrival,
            queued_at=now if status == ExecutionStatus.QUEUED else None,
        )

    async def _publish_node(self, node_execution: NodeExecution) -> None:
        body = {
            "kind": "node",
            "executionId": str(self.execution.id),
            "nodeExecution": node_execution_snapshot(node_execution),
        }
        for execution_id in (self.execution.id, *self.ancestors):
            await self.engine.publisher.publish(execution_id, body)

    # ------------------------------------------------------------ sub-graphs

    def _sub_graph_runner(self, node_execution: NodeExecution):
        async def run_sub_graph(graph_id: str, version: int, inputs: dict[str, Any]):
            child = await self._child_execution(node_execution, graph_id, version, inputs)
            child_run = GraphRun(self.engine, child, (self.execution.id, *self.ancestors))
            status = await child_run.run()
            if status != ExecutionStatus.COMPLETED:
                raise BlockError(f"sub-graph run {status.lower()}: {child.error or ''}".strip())
            for name, values in (child.outputs or {}).items():
                for value in values:
                    yield name, value

        return run_sub_graph

    async def _child_execution(
        self, node_execution: NodeExecution, graph_id: str, version: int, inputs: dict[str, Any]
    ) -> Execution:
        child_id = uuid.uuid5(_CHILD_NAMESPACE, str(node_execution.id))
        existing = await Execution.get_or_none(id=child_id)
        if existing is not None:
            return existing
        # Issue 16: the runner's own graphs, or versions a library store agent grants.
        graph = await get_graph(
            self.execution.user_id,  # type: ignore[attr-defined]
            str(graph_id),
            version,
        )
        if graph is None:
            raise BlockError(f"no graph {graph_id} version {version} of yours")
        child = await Execution.create(
            id=child_id,
            user_id=self.execution.user_id,  # type: ignore[attr-defined]
            graph_id=graph.graph_id,
            graph_version=graph.version,
            status=ExecutionStatus.QUEUED,
            source=self.execution.source,
            inputs=inputs,
            credentials_inputs=self.execution.credentials_inputs,  # issue 16
            parent_execution_id=self.execution.id,
            parent_node_execution_id=node_execution.id,
        )
        await publish_status(self.engine.publisher, child)
        return child
