"""API key management: only for a signed-in person, never through a key."""

from __future__ import annotations

import strawberry

from app.context import Info
from app.services import api_keys
from schema.inputs.api_keys import ApiKeyInput
from schema.permissions import SignedInUser
from schema.types.api_keys import ApiKey, ApiKeyPermission, CreatedApiKey


@strawberry.type
class ApiKeyQueries:
    @strawberry.field(permission_classes=[SignedInUser])
    async def api_keys(self, info: Info) -> list[ApiKey]:
        rows = await api_keys.list_api_keys(await info.context.user_id())
        return [ApiKey.from_model(row) for row in rows]

    @strawberry.field(permission_classes=[SignedInUser])
    async def api_key(self, info: Info, id: strawberry.ID) -> ApiKey | None:
        row = await api_keys.get_api_key(await info.context.user_id(), id)
        return ApiKey.from_model(row) if row else None


@strawberry.type
class ApiKeyMutations:
    @strawberry.mutation(permission_classes=[SignedInUser])
    async def create_api_key(self, info: Info, input: ApiKeyInput) -> CreatedApiKey:
        row, plain = await api_keys.create_api_key(
            info.context.settings,
            await info.context.user_id(),
            input.name,
            input.description,
            list(input.permissions),
        )
        return CreatedApiKey(api_key=ApiKey.from_model(row), plain_text_key=plain)

    @strawberry.mutation(permission_classes=[SignedInUser])
    async def revoke_api_key(self, info: Info, id: strawberry.ID) -> ApiKey:
        return ApiKey.from_model(await api_keys.revoke_api_key(await info.context.user_id(), id))

    @strawberry.mutation(permission_classes=[SignedInUser])
    async def suspend_api_key(self, info: Info, id: strawberry.ID) -> ApiKey:
        return ApiKey.from_model(await api_keys.suspend_api_key(await info.context.user_id(), id))

    @strawberry.mutation(permission_classes=[SignedInUser])
    async def update_api_key_permissions(
        self, info: Info, id: strawberry.ID, permissions: list[ApiKeyPermission]
    ) -> ApiKey:
        row = await api_keys.update_api_key_permissions(
            await info.context.user_id(), id, list(permissions)
        )
        return ApiKey.from_model(row)
