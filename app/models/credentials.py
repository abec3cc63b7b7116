"""Stored credentials that blocks use at run time; the secret is kept encrypted only."""

from enum import StrEnum

from tortoise import fields
from tortoise.models import Model


class CredentialsType(StrEnum):
    API_KEY = "API_KEY"
    BEARER = "BEARER"
    BASIC = "BASIC"


class StoredCredentials(Model):
    """A user's secret for blocks. Only metadata ever leaves the server."""

    id = fields.UUIDField(primary_key=True)
    user = fields.ForeignKeyField(
        "models.User", related_name="credentials", on_delete=fields.CASCADE
    )
    provider = fields.CharField(max_length=64)
    type = fields.CharEnumField(CredentialsType, max_length=16)
    title = fields.CharField(max_length=200)
    # A Fernet token (CREDENTIALS_ENCRYPTION_KEY); decrypted only for a node run.
    encrypted_secret = fields.TextField()
    created_at = fields.DatetimeField(auto_now_add=True)
    last_used_at = fields.DatetimeField(null=True)

    class Meta:
        table = "credentials"
        indexes = [("user_id", "created_at")]
