"""The typed per-request (per-connection, for websockets) GraphQL context."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket
from strawberry.types import Info as StrawberryInfo

from app import log_context
from app.auth import Credentials, authenticate, unauthenticated
from app.principal import Principal
from app.runtime import AppServices
from app.services.users import ensure_user


@dataclass
class Context:
    request: Request | WebSocket
    response: Response | WebSocket | None
    services: AppServices
    credentials: Credentials = field(default_factory=Credentials)
    # Per-request DataLoaders (resolvers.loaders.Loaders), made by the view.
    loaders: Any = None
    # graphql-transport-ws's connection_init payload; strawberry fills it in.
    connection_params: dict[str, Any] | None = None
    # The user whose websocket connection slot this connection holds.
    websocket_slot: uuid.UUID | None = None
    _principal: Principal | None = None
    _resolved: bool = False

    @property
    def settings(self):
        return self.services.settings

    async def optional_principal(self) -> Principal | None:
        """The caller, None when no credentials were sent; raises on bad ones."""
        if not self._resolved:
            self._principal = await authenticate(self.settings, self.credentials)
            self._resolved = True
            if self._principal is not None:
                log_context.bind(user_id=self._principal.user_id)
        return self._principal

    async def principal(self) -> Principal:
        principal = await self.optional_principal()
        if principal is None:
            raise unauthenticated()
        return principal

    async def user_id(self) -> uuid.UUID:
        """The caller's user id, their user row created on first sight."""
        return await ensure_user(self.settings, await self.principal())

    def set_principal(self, principal: Principal | None) -> None:
        self._principal = principal
        self._resolved = True
        if principal is not None:
            log_context.bind(user_id=principal.user_id)


Info = StrawberryInfo[Context, None]
