"""The credit ledger (append-only) and everything Stripe-shaped around it."""

from enum import StrEnum

from tortoise import fields
from tortoise.models import Model


class CreditTransactionType(StrEnum):
    TOP_UP = "TOP_UP"
    USAGE = "USAGE"
    GRANT = "GRANT"
    REFUND = "REFUND"
    CARD_CHECK = "CARD_CHECK"
    # Credits an admin added or took away by hand (adminAdjustCredits).
    ADMIN_ADJUSTMENT = "ADMIN_ADJUSTMENT"


class RefundRequestStatus(StrEnum):
    PENDING = "PENDING"
    APPROVED = "APPROVED"
    REJECTED = "REJECTED"


class DisputeDecision(StrEnum):
    # Closed at Stripe (we let the customer have the money back) and deducted at once.
    ACCEPTED = "ACCEPTED"
    # Contested with evidence; deducted only if the dispute is lost.
    CONTESTED = "CONTESTED"


class UserBalance(Model):
    """One row per user: the row that is locked to serialise balance changes."""

    user = fields.OneToOneField(
        "models.User", related_name="balance", primary_key=True, on_delete=fields.CASCADE
    )
    balance = fields.IntField(default=0)
    # Credits held for post-paid runs in flight (CreditReservation rows); what
    # can be spent is balance - reserved.
    reserved = fields.IntField(default=0)
    # Time of the latest active transaction: every new one gets a later time, so
    # a user's transactions never share a created_at.
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "user_balances"


class CreditTransaction(Model):
    id = fields.UUIDField(primary_key=True)
    # The idempotency key: a Stripe session id, a node execution id, a grant name.
    key = fields.CharField(max_length=255, unique=True)
    user = fields.ForeignKeyField(
        "models.User", related_name="credit_transactions", on_delete=fields.CASCADE
    )
    type = fields.CharEnumField(CreditTransactionType, max_length=16)
    amount = fields.IntField()
    # Balance right after this transaction; null while inactive.
    running_balance = fields.IntField(null=True)
    # Inactive rows (an unpaid checkout) do not count until activated.
    is_active = fields.BooleanField(default=True)
    created_at = fields.DatetimeField()
    description = fields.TextField(null=True)
    metadata = fields.JSONField(null=True)
    usage_graph_id = fields.UUIDField(null=True)
    usage_execution_id = fields.UUIDField(null=True)
    usage_node_count = fields.IntField(null=True)

    class Meta:
        table = "credit_transactions"
        indexes = [("user_id", "is_active", "created_at"), ("user_id", "type", "created_at")]


class CreditReservation(Model):
    """Credits held while a node (or executeBlock) with an after-run cost runs: its
    minimum, released when its real cost is charged (SEMANTICS.md §7)."""

    # The key of the transaction that will charge the run's real cost.
    key = fields.CharField(max_length=255, primary_key=True)
    user = fields.ForeignKeyField(
        "models.User", related_name="credit_reservations", on_delete=fields.CASCADE
    )
    amount = fields.IntField()
    # Set for node runs, so a run's leftovers are released at its end in one statement.
    execution_id = fields.UUIDField(null=True)
    created_at = fields.DatetimeField()

    class Meta:
        table = "credit_reservations"
        indexes = [("execution_id",), ("created_at",)]


class RefundRequest(Model):
    id = fields.UUIDField(primary_key=True)
    user = fields.ForeignKeyField(
        "models.User", related_name="refund_requests", on_delete=fields.CASCADE
    )
    # One request per top-up.
    transaction_key = fields.CharField(max_length=255, unique=True)
    amount = fields.IntField()
    reason = fields.TextField()
    result = fields.TextField(null=True)
    status = fields.CharEnumField(
        RefundRequestStatus, max_length=16, default=RefundRequestStatus.PENDING
    )
    # The Stripe refund that paid it out, once there is one.
    refund_id = fields.CharField(max_length=255, null=True)
    # The admin who approved or rejected it (null: decided automatically or by Stripe).
    decided_by = fields.UUIDField(null=True)
    decided_at = fields.DatetimeField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "refund_requests"
        indexes = [("user_id", "created_at"), ("status", "created_at")]


class Dispute(Model):
    """A Stripe dispute of a payment and our answer, so that its events act once."""

    id = fields.CharField(max_length=255, primary_key=True)
    user = fields.ForeignKeyField("models.User", related_name="disputes", on_delete=fields.CASCADE)
    amount = fields.IntField()
    payment_intent = fields.CharField(max_length=255, null=True)
    decision = fields.CharEnumField(DisputeDecision, max_length=16, null=True)
    # Set once Stripe has our answer (the close or the evidence).
    answered_at = fields.DatetimeField(null=True)
    # Stripe's status once closed: won, lost or warning_closed.
    closed_status = fields.CharField(max_length=32, null=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "disputes"


class AutoTopUpConfig(Model):
    user = fields.OneToOneField(
        "models.User", related_name="auto_top_up", primary_key=True, on_delete=fields.CASCADE
    )
    threshold = fields.IntField(default=0)
    # 0 means off.
    amount = fields.IntField(default=0)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "auto_top_up_configs"


class ProcessedStripeEvent(Model):
    """Webhook event ids already handled, so a replay is ignored."""

    id = fields.CharField(max_length=255, primary_key=True)
    type = fields.CharField(max_length=100)
    received_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "processed_stripe_events"
