"""API keys: only a keyed hash of the key is kept."""

from enum import StrEnum

from tortoise import fields
from tortoise.models import Model


class ApiKeyStatus(StrEnum):
    ACTIVE = "ACTIVE"
    REVOKED = "REVOKED"
    SUSPENDED = "SUSPENDED"


class ApiKeyPermission(StrEnum):
    EXECUTE_GRAPH = "EXECUTE_GRAPH"
    READ_GRAPH = "READ_GRAPH"
    EXECUTE_BLOCK = "EXECUTE_BLOCK"
    READ_BLOCK = "READ_BLOCK"
    READ_EXECUTION = "READ_EXECUTION"
    MANAGE_SCHEDULES = "MANAGE_SCHEDULES"


class ApiKey(Model):
    id = fields.UUIDField(primary_key=True)
    user = fields.ForeignKeyField("models.User", related_name="api_keys", on_delete=fields.CASCADE)
    name = fields.CharField(max_length=100)
    description = fields.CharField(max_length=1000, null=True)
    # HMAC-SHA256(API_KEY_PEPPER, key), hex.
    key_hash = fields.CharField(max_length=64, unique=True)
    prefix = fields.CharField(max_length=8)
    postfix = fields.CharField(max_length=4)
    status = fields.CharEnumField(ApiKeyStatus, max_length=16, default=ApiKeyStatus.ACTIVE)
    permissions: list[str] = fields.JSONField(default=list)
    created_at = fields.DatetimeField(auto_now_add=True)
    last_used_at = fields.DatetimeField(null=True)
    revoked_at = fields.DatetimeField(null=True)

    class Meta:
        table = "api_keys"
        indexes = [("user_id", "created_at")]
