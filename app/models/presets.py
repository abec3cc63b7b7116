"""Presets: saved inputs and credentials for one graph version."""

from tortoise import fields
from tortoise.models import Model


class Preset(Model):
    """Inputs and credential ids that a run, a schedule or a trigger starts from."""

    id = fields.UUIDField(primary_key=True)
    user = fields.ForeignKeyField("models.User", related_name="presets", on_delete=fields.CASCADE)
    graph_id = fields.UUIDField()
    # Moves along with the user's library entry (a new graph or listed version).
    graph_version = fields.IntField()
    name = fields.CharField(max_length=200)
    description = fields.TextField(default="")
    inputs = fields.JSONField(default=dict)
    # Credentials field -> stored credentials id; never secrets.
    credentials_inputs = fields.JSONField(default=dict)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "presets"
        indexes = [("user_id", "graph_id", "created_at")]
