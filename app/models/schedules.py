"""Cron schedules that run a graph version as their owner."""

from tortoise import fields
from tortoise.models import Model


class Schedule(Model):
    id = fields.UUIDField(primary_key=True)
    user = fields.ForeignKeyField("models.User", related_name="schedules", on_delete=fields.CASCADE)
    graph_id = fields.UUIDField()
    graph_version = fields.IntField()
    name = fields.CharField(max_length=200)
    cron = fields.CharField(max_length=200)
    timezone = fields.CharField(max_length=64)
    inputs = fields.JSONField(default=dict)
    credentials = fields.JSONField(default=dict)
    # Runs start from this preset's inputs and credentials (the schedule's own win).
    # Not a foreign key: SQLite cannot add one to an existing table; deletePreset
    # deletes the preset's schedules itself.
    preset_id = fields.UUIDField(null=True)
    # The next due time in UTC; the scheduler claims rows by it.
    next_run_at = fields.DatetimeField(null=True)
    last_run_at = fields.DatetimeField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "schedules"
        indexes = [("user_id", "graph_id"), ("next_run_at",), ("graph_id", "graph_version")]
