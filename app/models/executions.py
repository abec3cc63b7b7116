"""Graph executions and node executions, with the per-execution event counter."""

from enum import StrEnum

from tortoise import fields
from tortoise.models import Model


class ExecutionStatus(StrEnum):
    INCOMPLETE = "INCOMPLETE"
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    TERMINATED = "TERMINATED"
    FAILED = "FAILED"
    # Waiting for a person (human review): no worker holds the run meanwhile.
    REVIEW = "REVIEW"


TERMINAL_STATUSES = frozenset(
    {ExecutionStatus.COMPLETED, ExecutionStatus.TERMINATED, ExecutionStatus.FAILED}
)


class GraphSource(StrEnum):
    BUILDER = "BUILDER"
    LIBRARY = "LIBRARY"
    API = "API"
    SCHEDULE = "SCHEDULE"
    WEBHOOK = "WEBHOOK"


class Execution(Model):
    id = fields.UUIDField(primary_key=True)
    user = fields.ForeignKeyField(
        "models.User", related_name="executions", on_delete=fields.CASCADE
    )
    graph_id = fields.UUIDField()
    graph_version = fields.IntField()
    status = fields.CharEnumField(ExecutionStatus, max_length=16, default=ExecutionStatus.QUEUED)
    source = fields.CharEnumField(GraphSource, max_length=16, null=True)
    inputs = fields.JSONField(default=dict)
    # Credential ids only, never secrets.
    credentials_inputs = fields.JSONField(default=dict)
    # Node id -> input pin -> value, set on the node before it first runs (a webhook
    # delivery's body for its trigger node).
    node_inputs = fields.JSONField(null=True)
    outputs = fields.JSONField(default=dict)
    created_at = fields.DatetimeField(auto_now_add=True)
    started_at = fields.DatetimeField(null=True)
    ended_at = fields.DatetimeField(null=True)
    # {"cost", "duration_seconds", "node_run_seconds", "node_count",
    #  "node_error_count", "activity_summary", "correctness_score"}
    stats = fields.JSONField(null=True)
    error = fields.TextField(null=True)
    # Values of static links, sink node id -> pin -> value: they stay for every
    # later run of the sink, so a resumed run must know them.
    static_inputs = fields.JSONField(default=dict)
    share_token = fields.UUIDField(null=True, unique=True)
    is_deleted = fields.BooleanField(default=False)
    # Set for the child execution that a SubGraph node runs.
    parent_execution = fields.ForeignKeyField(
        "models.Execution", related_name="children", null=True, on_delete=fields.CASCADE
    )
    parent_node_execution_id = fields.UUIDField(null=True)
    # Bumped by each runner that takes the execution over (workers/engine/ownership.py);
    # every write of a runner checks it still holds the number it got.
    runner_epoch = fields.BigIntField(default=0)
    # executeGraph's maxCredits: the most this run (its sub-graph runs included) may
    # be charged; set on the root execution only.
    max_credits = fields.IntField(null=True)
    # Fair concurrency (app/services/run_slots.py): set when the run is given one of
    # its user's MAX_RUNNING_EXECUTIONS_PER_USER slots; a QUEUED run without it waits.
    admitted_at = fields.DatetimeField(null=True)
    # The arq queue of the deployment whose workers start it (its REDIS_PREFIX):
    # deployments sharing one database never start each other's runs.
    run_queue = fields.CharField(max_length=255, null=True)

    node_executions: fields.ReverseRelation["NodeExecution"]

    class Meta:
        table = "executions"
        indexes = [
            ("user_id", "is_deleted", "created_at"),
            ("user_id", "graph_id", "created_at"),
            ("graph_id", "status"),
            ("status",),
            # A deployment's runs waiting for a slot, per user, oldest first (run_slots.py).
            ("run_queue", "status", "user_id", "created_at"),
            # Runs admitted to a slot and not yet running (few, among a backlog of
            # QUEUED ones): counted at every admission (run_slots.py).
            ("status", "admitted_at"),
        ]


class NodeExecution(Model):
    id = fields.UUIDField(primary_key=True)
    execution = fields.ForeignKeyField(
        "models.Execution", related_name="node_executions", on_delete=fields.CASCADE
    )
    node_id = fields.UUIDField()
    block_id = fields.UUIDField()
    # INCOMPLETE while it still waits for inputs on some pins.
    status = fields.CharEnumField(
        ExecutionStatus, max_length=16, default=ExecutionStatus.INCOMPLETE
    )
    input_data = fields.JSONField(default=dict)
    output_data = fields.JSONField(default=dict)
    # Arrival order within the execution: keeps per-pin queues FIFO across restarts.
    arrival = fields.BigIntField(default=0)
    queued_at = fields.DatetimeField(null=True)
    started_at = fields.DatetimeField(null=True)
    ended_at = fields.DatetimeField(null=True)
    error = fields.TextField(null=True)
    cost = fields.IntField(default=0)

    class Meta:
        table = "node_executions"
        indexes = [("execution_id", "status")]
        # One node execution per input arrival: even a second runner cannot run a
        # node (and so charge it) twice for the same values.
        unique_together = (("execution_id", "node_id", "arrival"),)
