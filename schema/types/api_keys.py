"""API keys as clients see them: never the key itself, except once at creation."""

from __future__ import annotations

from datetime import datetime

import strawberry

from app import models

ApiKeyStatus = strawberry.enum(models.ApiKeyStatus, name="ApiKeyStatus")
ApiKeyPermission = strawberry.enum(models.ApiKeyPermission, name="ApiKeyPermission")


@strawberry.type
class ApiKey:
    id: strawberry.ID
    name: str
    description: str | None
    prefix: str = strawberry.field(description="First characters of the key, for recognising it.")
    postfix: str = strawberry.field(description="Last characters of the key.")
    status: ApiKeyStatus
    permissions: list[ApiKeyPermission]
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def from_model(cls, row: models.ApiKey) -> ApiKey:
        return cls(
            id=row.id,
            name=row.name,
            description=row.description,
            prefix=row.prefix,
            postfix=row.postfix,
            status=row.status,
            permissions=[models.ApiKeyPermission(p) for p in row.permissions],
            created_at=row.created_at,
            last_used_at=row.last_used_at,
            revoked_at=row.revoked_at,
        )


@strawberry.type
class CreatedApiKey:
    api_key: ApiKey
    plain_text_key: str = strawberry.field(description="Shown once; only a hash is stored.")
