from __future__ import annotations

import strawberry

from schema.types.api_keys import ApiKeyPermission


@strawberry.input
class ApiKeyInput:
    name: str
    description: str | None = None
    permissions: list[ApiKeyPermission]
