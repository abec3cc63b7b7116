"""The signed-in caller, as every layer below the edge sees it."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from app.models import ApiKeyPermission


@dataclass(frozen=True)
class Principal:
    user_id: uuid.UUID
    email: str = ""
    is_admin: bool = False
    # Set when the caller used an API key; its permissions bound what it may do.
    api_key_id: uuid.UUID | None = None
    permissions: frozenset[ApiKeyPermission] = field(default_factory=frozenset)
    # A JWT's `exp` (Unix time); open websockets are closed once it passes.
    expires_at: float | None = None

    @property
    def via_api_key(self) -> bool:
        return self.api_key_id is not None

    def allows(self, permission: ApiKeyPermission) -> bool:
        return not self.via_api_key or permission in self.permissions
