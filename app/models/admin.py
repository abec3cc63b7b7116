"""The admins' audit log: every admin operation, who did it and when."""

from enum import StrEnum

from tortoise import fields
from tortoise.models import Model


class AdminAction(StrEnum):
    LIST_USERS = "LIST_USERS"
    VIEW_CREDIT_HISTORY = "VIEW_CREDIT_HISTORY"
    ADJUST_CREDITS = "ADJUST_CREDITS"
    LIST_REFUND_REQUESTS = "LIST_REFUND_REQUESTS"
    APPROVE_REFUND = "APPROVE_REFUND"
    REJECT_REFUND = "REJECT_REFUND"
    VIEW_AUDIT_LOG = "VIEW_AUDIT_LOG"


class AdminAuditEntry(Model):
    """Who (an admin), did what, to whom, when: one row per admin operation."""

    id = fields.UUIDField(primary_key=True)
    # The admin's user id (the JWT's sub) and email at the time.
    admin_id = fields.UUIDField()
    admin_email = fields.CharField(max_length=320)
    action = fields.CharEnumField(AdminAction, max_length=32)
    target_user_id = fields.UUIDField(null=True)
    details = fields.JSONField(null=True)
    created_at = fields.DatetimeField()

    class Meta:
        table = "admin_audit_log"
        indexes = [("created_at",), ("admin_id", "created_at"), ("target_user_id", "created_at")]
