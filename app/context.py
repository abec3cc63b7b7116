"""The typed per-request (per-connection, for websockets) GraphQL context."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket
from strawberry.types import Info as StrawberryInfo

from app import log_context
from app.auth import Credentials, authenticate, unauthenticated
from app.errors import AppError, ErrorCode
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
    # Why a websocket signed in by its upgrade headers got no slot (it is closed 4429).
    slot_refusal: str | None = None
    # Introspection fields its operations resolved (schema/executor.py): an
    # anonymous request is charged for them (app/anonymous_limit.py).
    introspection_fields: int = 0
    _principal: Principal | None = None
    _resolved: bool = False
    # Why the credentials were refused, once they were (asked again, it is raised again).
    _refused: AppError | None = None

    @property
    def settings(self):
        return self.services.settings

    async def optional_principal(self) -> Principal | None:
        """The caller, None when no credentials were sent; raises on bad ones."""
        if self._refused is not None:
            raise self._refused
        if not self._resolved:
            try:
                principal = await authenticate(self.settings, self.credentials)
            except AppError as refused:
                self._refused = refused
                raise
            self.set_principal(principal)
        return self._principal

    def set_refused(self, refused: AppError) -> None:
        self._refused = refused

    async def credentials_still_valid(self) -> bool:
        """For long-lived connections: whether the credentials they signed in
        with still hold (see `credentials_refusal`)."""
        return await self.credentials_refusal() is None

    async def credentials_refusal(self) -> AppError | None:
        """For long-lived connections (websockets, HTTP streams): None while the
        credentials they signed in with still hold, else why not. A key that
        is revoked or suspended, or a token past its `exp`, is UNAUTHENTICATED;
        a key that lost a permission it had is FORBIDDEN: what the connection
        started under that permission (a subscription) must not go on. A key
        that gained permissions takes them for the operations that follow."""
        principal = self._principal
        if self._refused is not None:
            return self._refused
        if principal is None:
            return unauthenticated()
        if not principal.via_api_key:
            if principal.expires_at is None or principal.expires_at > time.time():
                return None
            return unauthenticated("The token has expired; sign in again")
        try:
            current = await authenticate(self.settings, self.credentials)
        except AppError:
            return unauthenticated("The API key is no longer active")
        if current is None or current.api_key_id != principal.api_key_id:
            return unauthenticated("The API key is no longer active")
        if not principal.permissions <= current.permissions:
            return AppError(
                ErrorCode.FORBIDDEN, "The API key lost a permission this connection was using"
            )
        self._principal = current
        return None

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
        self._refused = None
        if principal is not None:
            log_context.bind(user_id=principal.user_id)


Info = StrawberryInfo[Context, None]
