"""Stored credentials as clients see them: metadata only, never the secret."""

from __future__ import annotations

from datetime import datetime

import strawberry

from app import models

CredentialsType = strawberry.enum(
    models.CredentialsType,
    name="CredentialsType",
    description="API_KEY and BEARER secrets are tokens; a BASIC secret is username:password.",
)


@strawberry.type(description="Stored credentials for blocks; the secret never leaves the server.")
class Credentials:
    id: strawberry.ID
    provider: str
    type: CredentialsType
    title: str
    created_at: datetime
    last_used_at: datetime | None = strawberry.field(
        description="When a node run last used them (to the minute)."
    )

    @classmethod
    def from_model(cls, row: models.StoredCredentials) -> Credentials:
        return cls(
            id=strawberry.ID(str(row.id)),
            provider=row.provider,
            type=row.type,
            title=row.title,
            created_at=row.created_at,
            last_used_at=row.last_used_at,
        )
