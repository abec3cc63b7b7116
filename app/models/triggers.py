"""Webhook triggers: URLs that start runs when a signed POST arrives, and their deliveries."""

from enum import StrEnum

from tortoise import fields
from tortoise.models import Model


class TriggerDeliveryStatus(StrEnum):
    # A run was started; its execution id is recorded.
    ACCEPTED = "ACCEPTED"
    # Signed and well-formed, but no run could start (invalid inputs, no credits, not JSON).
    REJECTED = "REJECTED"


class Trigger(Model):
    """The trigger of a graph (its owner's), or of one preset."""

    id = fields.UUIDField(primary_key=True)
    user = fields.ForeignKeyField("models.User", related_name="triggers", on_delete=fields.CASCADE)
    graph_id = fields.UUIDField()
    preset = fields.ForeignKeyField(
        "models.Preset", related_name="triggers", null=True, on_delete=fields.CASCADE
    )
    # "graph:<graph id>" or "preset:<preset id>": one trigger each, also under races.
    scope = fields.CharField(max_length=100, unique=True)
    is_enabled = fields.BooleanField(default=True)
    # The HMAC signing secret, as a Fernet token (CREDENTIALS_ENCRYPTION_KEY).
    encrypted_secret = fields.TextField()
    created_at = fields.DatetimeField(auto_now_add=True)
    secret_rotated_at = fields.DatetimeField(null=True)

    class Meta:
        table = "triggers"
        indexes = [("user_id", "graph_id")]


class TriggerDelivery(Model):
    """One signed POST that was accepted or rejected; replays only bump `attempts`."""

    id = fields.UUIDField(primary_key=True)
    trigger = fields.ForeignKeyField(
        "models.Trigger", related_name="deliveries", on_delete=fields.CASCADE
    )
    # The sender's delivery id header, else derived from the signed content.
    delivery_id = fields.CharField(max_length=200)
    # SHA-256 of the signed content: a verbatim replay is known whatever its headers say.
    signature_digest = fields.CharField(max_length=64)
    status = fields.CharEnumField(TriggerDeliveryStatus, max_length=16)
    execution_id = fields.UUIDField(null=True)
    error = fields.TextField(null=True)
    attempts = fields.IntField(default=1)
    received_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "trigger_deliveries"
        unique_together = (("trigger", "delivery_id"), ("trigger", "signature_digest"))
        indexes = [("trigger_id", "received_at")]
