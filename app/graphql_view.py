"""strawberry's ASGI view with our context, websocket sign-in and limits, the
anonymous rate limit, and offline GraphiQL."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.types.unset import UNSET

from app.anonymous_limit import AnonymousRateLimit, client_address
from app.auth import Credentials, authenticate, credentials_from, unauthenticated
from app.context import Context
from app.errors import AppError, ErrorCode
from app.metrics import GRAPHQL_REQUESTS
from app.principal import Principal
from app.settings import Settings
from app.websocket_auth import CredentialWatch
from app.websocket_limits import (
    ConnectionSlots,
    LimitedLegacyWSHandler,
    LimitedTransportWSHandler,
)
from resolvers.loaders import Loaders
from resolvers.root import build_schema

GRAPHIQL_TEMPLATE = (Path(__file__).parent / "templates" / "graphiql.html").read_text()
GRAPHIQL_ASSETS = "/static/graphiql"


class GraphQLView(GraphQL):
    """strawberry's ASGI view with our context, websocket sign-in and limits, and
    offline GraphiQL."""

    graphql_transport_ws_handler_class = LimitedTransportWSHandler
    graphql_ws_handler_class = LimitedLegacyWSHandler

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        super().__init__(
            build_schema(settings),
            graphql_ide="graphiql" if settings.GRAPHQL_EXPLORER else None,
            allowed_origins=settings.ALLOWED_ORIGINS,
            max_subscriptions_per_connection=settings.MAX_OPERATIONS_PER_WEBSOCKET,
            connection_init_wait_timeout=timedelta(seconds=settings.WEBSOCKET_INIT_TIMEOUT_SECONDS),
            **kwargs,
        )
        self.settings = settings
        self.connection_slots = ConnectionSlots(settings.MAX_WEBSOCKETS_PER_USER)
        self.credential_watch = CredentialWatch()
        self.anonymous_limit = AnonymousRateLimit(settings)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and not await self._admit(scope, send):
            return
        await super().__call__(scope, receive, send)

    async def _admit(self, scope: Scope, send: Send) -> bool:
        """Sign the request in before anything reads its body; one that proves
        no one counts against its address's anonymous limit. False when it was
        refused (and answered)."""
        credentials = credentials_from(Headers(scope=scope))
        principal: Principal | None = None
        refused: AppError | None = None
        if credentials.present:
            try:
                principal = await authenticate(self.settings, credentials)
            except AppError as error:
                refused = error
        scope.setdefault("state", {})["agentgraph.sign_in"] = (credentials, principal, refused)
        if principal is not None:
            return True
        redis = scope["app"].state.services.redis
        wait = await self.anonymous_limit.retry_after(redis, client_address(scope, self.settings))
        if wait is None:
            return True
        if scope["type"] == "websocket":
            # Closed before the handshake completes: the client sees 403.
            await send({"type": "websocket.close", "code": 1008, "reason": "Rate limited"})
            return False
        message = f"Too many requests without sign-in; try again in {wait} s"
        response = JSONResponse(
            {
                "data": None,
                "errors": [
                    {
                        "message": message,
                        "extensions": {
                            "code": ErrorCode.RATE_LIMITED.value,
                            "retryAfterSeconds": wait,
                        },
                    }
                ],
            },
            status_code=429,
            headers={"Retry-After": str(wait)},
        )
        await response(scope, _no_body, send)
        return False

    async def get_context(self, request: Request | WebSocket, response: Any) -> Context:
        credentials, principal, refused = request.scope.get("state", {}).get(
            "agentgraph.sign_in", (Credentials(), None, None)
        )
        context = Context(
            request=request,
            response=response,
            services=request.app.state.services,
            credentials=credentials,
            loaders=Loaders(),
        )
        if principal is not None:
            context.set_principal(principal)
        elif refused is not None:
            context.set_refused(refused)
        request.state.graphql_context = context
        return context

    async def run(self, request: Any, context: Any = UNSET, root_value: Any = UNSET) -> Any:
        try:
            return await super().run(request, context, root_value)
        finally:
            # A websocket that took a connection slot gives it back when it ends.
            held = getattr(request.state, "graphql_context", None)
            if held is not None and held.websocket_slot is not None:
                self.connection_slots.release(held.websocket_slot)
                held.websocket_slot = None

    async def on_ws_connect(self, context: Context) -> None:
        # Credentials in the connection_init payload win over the upgrade headers.
        params = credentials_from(context.connection_params or {})
        if params.present:
            context.credentials = params
        try:
            principal = await authenticate(context.settings, context.credentials)
            if principal is None:
                # No operation needs anonymity, so a socket must sign in.
                raise unauthenticated("Sign in with connection_init")
            context.set_principal(principal)
        except AppError as exc:
            raise ConnectionRejectionError({"code": exc.code.value}) from exc
        if context.websocket_slot is None:
            self.connection_slots.acquire(principal.user_id)  # TooManyConnections: 4429
            context.websocket_slot = principal.user_id

    def encode_json(self, data: object) -> bytes:
        return orjson.dumps(data)

    def decode_json(self, data: str | bytes) -> object:
        try:
            return json.loads(data)
        except (ValueError, RecursionError) as exc:
            # An integer of more than 4300 digits or very deep nesting is valid
            # JSON that Python will not read; strawberry turns only
            # JSONDecodeError into a 400 and lets these through as a 500.
            raise json.JSONDecodeError(f"Unreadable JSON ({exc})", "", 0) from exc

    async def render_graphql_ide(self, request: Request) -> Response:
        return HTMLResponse(GRAPHIQL_TEMPLATE.replace("{{assets}}", GRAPHIQL_ASSETS))

    async def process_result(self, request: Request, result: Any) -> Any:
        GRAPHQL_REQUESTS.labels(operation_type="http").inc()
        return await super().process_result(request, result)

    async def aclose(self) -> None:
        await self.credential_watch.aclose()


async def _no_body() -> dict:
    return {"type": "http.disconnect"}
