"""Human review of node runs: one row per node execution that waits for a person."""

from enum import StrEnum

from tortoise import fields
from tortoise.models import Model


class NodeReviewKind(StrEnum):
    # A HumanReview block: the person approves (maybe editing) its data, or rejects it.
    BLOCK = "BLOCK"
    # A sensitive block's node in a safe-mode graph: approved inputs run, rejected fail.
    SENSITIVE_NODE = "SENSITIVE_NODE"


class NodeReviewStatus(StrEnum):
    PENDING = "PENDING"
    APPROVED = "APPROVED"
    REJECTED = "REJECTED"
    # Not answered within REVIEW_TIMEOUT_HOURS: treated as rejected.
    EXPIRED = "EXPIRED"
    # The run was stopped (or ended otherwise) while the review waited.
    CANCELLED = "CANCELLED"


class NodeReview(Model):
    # The node execution that waits: one review per node execution.
    id = fields.UUIDField(primary_key=True)
    user = fields.ForeignKeyField(
        "models.User", related_name="node_reviews", on_delete=fields.CASCADE
    )
    # The node's own execution (a sub-graph run for a node inside one) and the root
    # execution whose job runs it (a decision enqueues that job again).
    execution = fields.ForeignKeyField(
        "models.Execution", related_name="node_reviews", on_delete=fields.CASCADE
    )
    root_execution_id = fields.UUIDField()
    graph_id = fields.UUIDField()
    graph_version = fields.IntField()
    node_id = fields.UUIDField()
    block_id = fields.UUIDField()
    kind = fields.CharEnumField(NodeReviewKind, max_length=16)
    status = fields.CharEnumField(NodeReviewStatus, max_length=16, default=NodeReviewStatus.PENDING)
    # What the person is shown: HumanReview's data, or a sensitive node's inputs.
    # Boxed as {"value": ...} (see `box`), like reviewed_data.
    data = fields.JSONField(null=True)
    # HumanReview's message to the person.
    message = fields.TextField(null=True)
    # The decision: edited data (null: as shown) and the reviewer's message.
    reviewed_data = fields.JSONField(null=True)
    review_message = fields.TextField(null=True)
    created_at = fields.DatetimeField()
    expires_at = fields.DatetimeField()
    decided_at = fields.DatetimeField(null=True)

    @staticmethod
    def box(value):
        """A JSONField takes a bare string for JSON text to decode: any value goes in a box."""
        return {"value": value}

    @property
    def shown(self):
        return (self.data or {}).get("value")

    @property
    def edited(self):
        """The approved data as edited; None: as shown."""
        return (self.reviewed_data or {}).get("value")

    class Meta:
        table = "node_reviews"
        indexes = [
            ("user_id", "status", "created_at"),
            ("status", "expires_at"),
            ("root_execution_id", "status"),
            ("execution_id", "status"),
        ]
