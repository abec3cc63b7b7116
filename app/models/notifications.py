"""Notifications a user sees in the app and may get by email."""

from enum import StrEnum

from tortoise import fields
from tortoise.models import Model

from app.models.users import NotificationType


class EmailStatus(StrEnum):
    # No email: SMTP_URL is not set.
    NONE = "NONE"
    # Queued for the mail worker.
    PENDING = "PENDING"
    SENT = "SENT"
    # Beyond the user's daily limit: waits for that day's digest.
    DIGEST = "DIGEST"
    # Sent as part of a digest.
    DIGESTED = "DIGESTED"
    # Every try failed.
    FAILED = "FAILED"


class Notification(Model):
    id = fields.UUIDField(primary_key=True)
    user = fields.ForeignKeyField(
        "models.User", related_name="notifications", on_delete=fields.CASCADE
    )
    type = fields.CharEnumField(NotificationType, max_length=32)
    # What the notification is about (a run, a dispute, …): the same thing is
    # notified once however often its event is replayed.
    key = fields.CharField(max_length=255, unique=True)
    title = fields.CharField(max_length=300)
    body = fields.TextField()
    data = fields.JSONField(null=True)
    created_at = fields.DatetimeField()
    # The user's local date (their time zone) it counts towards for the daily limit.
    day = fields.CharField(max_length=10)
    read_at = fields.DatetimeField(null=True)
    email_status = fields.CharEnumField(EmailStatus, max_length=16)
    emailed_at = fields.DatetimeField(null=True)

    class Meta:
        table = "notifications"
        indexes = [
            ("user_id", "created_at"),
            ("user_id", "read_at"),
            ("user_id", "day", "email_status"),
            ("email_status", "created_at"),
        ]
