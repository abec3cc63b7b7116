"""Cron schedules that run a graph version as their owner, and their firing history."""

from enum import StrEnum

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
    # A paused schedule keeps its row but has no due time (next_run_at is null), so
    # the scheduler's claim (next_run_at <= now) can never pick it up.
    is_paused = fields.BooleanField(default=False)
    # Each firing's run gets this budget (executeGraph's maxCredits); null: none.
    max_credits = fields.IntField(null=True)

    class Meta:
        table = "schedules"
        indexes = [("user_id", "graph_id"), ("next_run_at",), ("graph_id", "graph_version")]


class FiringOutcome(StrEnum):
    """What became of a due time; FIRED and the SKIPPED ones are kept as firings."""

    FIRED = "FIRED"
    # The owner's balance was <= 0: this due time is skipped, the schedule goes on.
    SKIPPED_NO_BALANCE = "SKIPPED_NO_BALANCE"
    # The inputs no longer validate (e.g. a block was disabled): skipped, goes on.
    SKIPPED_INVALID = "SKIPPED_INVALID"
    # The graph version is gone: the schedule can never fire again and is deleted
    # (its history with it).
    GRAPH_GONE = "GRAPH_GONE"
    # Another worker fired this due time first (only possible without row locks).
    ALREADY_FIRED = "ALREADY_FIRED"


class ScheduleFiring(Model):
    """One due time of a schedule and what became of it (a paused schedule has no
    due times, so pausing leaves no rows)."""

    id = fields.UUIDField(primary_key=True)
    schedule = fields.ForeignKeyField(
        "models.Schedule", related_name="firings", on_delete=fields.CASCADE
    )
    due_at = fields.DatetimeField()
    fired_at = fields.DatetimeField()
    outcome = fields.CharEnumField(FiringOutcome, max_length=32)
    # Set when it fired: the run it started (not a foreign key: runs may be deleted).
    execution_id = fields.UUIDField(null=True)
    # Why it was skipped, as the error said.
    reason = fields.TextField(null=True)

    class Meta:
        table = "schedule_firings"
        indexes = [("schedule_id", "due_at")]
