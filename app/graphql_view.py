"""strawberry's ASGI view with our context, websocket sign-in and limits, and
offline GraphiQL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.types.unset import UNSET

from app.auth import authenticate, credentials_from
from app.context import Context
from app.errors import AppError
from app.metrics import GRAPHQL_REQUESTS
from app.settings import Settings
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
            **kwargs,
        )
        self.connection_slots = ConnectionSlots(settings.MAX_WEBSOCKETS_PER_USER)

    async def get_context(self, request: Request | WebSocket, response: Any) -> Context:
        context = Context(
            request=request,
            response=response,
            services=request.app.state.services,
            credentials=credentials_from(request.headers),
            loaders=Loaders(),
        )
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
            context.set_principal(principal)
        except AppError as exc:
            raise ConnectionRejectionError({"code": exc.code.value}) from exc
        if principal is not None and context.websocket_slot is None:
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
