"""Stored credentials: only a signed-in person manages them, never an API key."""

from __future__ import annotations

import strawberry

from app.context import Info
from app.services import credentials
from schema.permissions import SignedInUser
from schema.types.credentials import Credentials, CredentialsType


@strawberry.type
class CredentialsQueries:
    @strawberry.field(
        permission_classes=[SignedInUser],
        description="The user's stored credentials (metadata only), newest first.",
    )
    async def credentials(self, info: Info, provider: str | None = None) -> list[Credentials]:
        rows = await credentials.list_credentials(await info.context.user_id(), provider)
        return [Credentials.from_model(row) for row in rows]


@strawberry.type
class CredentialsMutations:
    @strawberry.mutation(
        permission_classes=[SignedInUser],
        description=(
            "Stores a secret for blocks, encrypted; it is never shown again. A BASIC "
            "secret is username:password."
        ),
    )
    async def create_credentials(
        self, info: Info, provider: str, type: CredentialsType, title: str, secret: str
    ) -> Credentials:
        row = await credentials.create_credentials(
            info.context.settings, await info.context.user_id(), provider, type, title, secret
        )
        return Credentials.from_model(row)

    @strawberry.mutation(
        permission_classes=[SignedInUser],
        description="Returns the deleted id; runs that name them fail validation from now on.",
    )
    async def delete_credentials(self, info: Info, id: strawberry.ID) -> strawberry.ID:
        deleted = await credentials.delete_credentials(await info.context.user_id(), id)
        return strawberry.ID(str(deleted))
