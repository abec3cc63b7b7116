"""strawberry's ASGI view with our context, websocket sign-in and limits, the
anonymous rate limit, and offline GraphiQL.

Subscriptions travel over websockets (graphql-transport-ws, legacy graphql-ws)
and over HTTP streams (Apollo's multipart protocol, GraphQL over SSE); every
message is JSON text. An HTTP stream holds one of its user's connection slots
(MAX_WEBSOCKETS_PER_USER) like a websocket does, for as long as it is open.
"""

from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
from cross_web import HTTPException
from graphql import GraphQLError
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError, MissingQueryError
from strawberry.http import GraphQLRequestData
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.subscriptions import (
    GRAPHQL_SSE_PROTOCOL,
    GRAPHQL_TRANSPORT_WS_PROTOCOL,
    GRAPHQL_WS_PROTOCOL,
    MULTIPART_SUBSCRIPTION_PROTOCOL,
)
from strawberry.types import ExecutionResult, SubscriptionExecutionResult
from strawberry.types.graphql import OperationType
from strawberry.types.unset import UNSET

from app.anonymous_limit import (
    INTROSPECTION_FIELDS_PER_REQUEST,
    AnonymousRateLimit,
    client_address,
)
from app.auth import Credentials, authenticate, credentials_from, unauthenticated
from app.context import Context
from app.errors import AppError, ErrorCode, bad_input
from app.metrics import GRAPHQL_REQUESTS
from app.principal import Principal
from app.settings import Settings
from app.websocket_auth import CredentialWatch, watched_stream
from app.websocket_limits import (
    ConnectionSlots,
    LimitedLegacyWSHandler,
    LimitedTransportWSHandler,
    TooManyConnections,
)
from resolvers.loaders import Loaders
from resolvers.root import build_schema
from schema.executor import SHARED_RESULTS
from schema.extensions import present_errors
from schema.response_cache import CachedBody

GRAPHIQL_TEMPLATE = (Path(__file__).parent / "templates" / "graphiql.html").read_text()
GRAPHIQL_ASSETS = "/static/graphiql"


class GraphQLView(GraphQL):
    graphql_transport_ws_handler_class = LimitedTransportWSHandler
    graphql_ws_handler_class = LimitedLegacyWSHandler

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        super().__init__(
            build_schema(settings),
            graphql_ide="graphiql" if settings.GRAPHQL_EXPLORER else None,
            allowed_origins=settings.allowed_origins,
            max_subscriptions_per_connection=settings.MAX_OPERATIONS_PER_WEBSOCKET,
            connection_init_wait_timeout=timedelta(seconds=settings.WEBSOCKET_INIT_TIMEOUT_SECONDS),
            subscription_protocols=(
                GRAPHQL_TRANSPORT_WS_PROTOCOL,
                GRAPHQL_WS_PROTOCOL,
                MULTIPART_SUBSCRIPTION_PROTOCOL,
                GRAPHQL_SSE_PROTOCOL,
            ),
            **kwargs,
        )
        self.settings = settings
        self.connection_slots = ConnectionSlots(settings.MAX_WEBSOCKETS_PER_USER)
        self.credential_watch = CredentialWatch()
        self.anonymous_limit = AnonymousRateLimit(settings)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and not await self._admit(scope, send):
            return
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release_slot(scope)

    def _release_slot(self, scope: Scope) -> None:
        """A websocket or HTTP stream that took a connection slot gives it back
        when it ends, however it ends (for a stream: after its last byte)."""
        held = scope.get("state", {}).get("graphql_context")
        if held is not None and held.websocket_slot is not None:
            self.connection_slots.release(held.websocket_slot)
            held.websocket_slot = None

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
        address = client_address(scope, self.settings)
        counted_at = time.time()
        wait = await self.anonymous_limit.retry_after(redis, address, counted_at)
        if wait is None:
            if scope["type"] == "websocket":
                # Given back if the socket signs in (on_ws_connect).
                scope["state"]["agentgraph.anonymous_count"] = (address, counted_at)
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

    async def run(self, request: Any, context: Any = UNSET, root_value: Any = UNSET) -> Any:
        """strawberry's, but a request it cannot read (not JSON, a batch, a
        mutation over GET, no query) is answered in GraphQL's JSON shape with
        a code, not plain text, which GraphQL clients fail to parse."""
        try:
            return await super().run(request, context, root_value)
        except HTTPException as refusal:
            code = ErrorCode.NOT_FOUND if refusal.status_code == 404 else ErrorCode.BAD_USER_INPUT
            return JSONResponse(
                {
                    "data": None,
                    "errors": [{"message": refusal.reason, "extensions": {"code": code.value}}],
                },
                status_code=refusal.status_code,
            )

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
            if isinstance(request, WebSocket):
                # Signed in by its upgrade headers: it counts against its user's
                # cap from now, not from connection_init (else sockets that never
                # send one would be free until the init timeout).
                try:
                    self.connection_slots.hold(context, principal.user_id)
                except TooManyConnections as refusal:
                    context.slot_refusal = str(refusal)
        elif refused is not None:
            context.set_refused(refused)
        request.state.graphql_context = context
        return context

    async def create_streaming_response(
        self, request: Request, stream: Any, sub_response: Response, headers: Any
    ) -> Response:
        refusal = await self._take_stream_slot(request.state.graphql_context)
        if refusal is not None:
            # Refused like a websocket over the cap (4429): before the stream starts.
            response = self.create_response(
                await self.process_result(request, refusal), sub_response
            )
            response.status_code = 429
            return response
        return await super().create_streaming_response(request, stream, sub_response, headers)

    async def _take_stream_slot(self, context: Context) -> ExecutionResult | None:
        """An HTTP stream holds a connection slot of its user, like a websocket;
        the refusal when they have none left. Bad or missing credentials take
        none: the operation itself answers UNAUTHENTICATED."""
        try:
            principal = await context.optional_principal()
        except AppError:
            return None
        if principal is None:
            return None
        try:
            self.connection_slots.hold(context, principal.user_id)
        except TooManyConnections as refusal:
            return _error_result(AppError(ErrorCode.RATE_LIMITED, str(refusal)))
        return None

    async def execute_operation(
        self,
        request: Request,
        request_adapter: Any,
        request_data: Any,
        context: Context,
        root_value: Any,
        sub_response: Any,
    ) -> Any:
        """strawberry's; an HTTP stream of a signed-in caller is watched like a
        websocket: once its key is revoked, suspended or loses a permission,
        or its token expires, it ends with that error as its last result."""
        result = await super().execute_operation(
            request, request_adapter, request_data, context, root_value, sub_response
        )
        if not isinstance(result, SubscriptionExecutionResult):
            return result  # a plain answer
        try:
            principal = await context.optional_principal()
        except AppError:
            principal = None
        if principal is None:
            return result  # it answers UNAUTHENTICATED and ends at once
        return watched_stream(
            self.credential_watch, result, context.credentials_refusal, _error_result
        )

    async def execute_single(
        self,
        request: Request,
        request_adapter: Any,
        sub_response: Any,
        context: Context,
        root_value: Any,
        request_data: GraphQLRequestData,
    ) -> ExecutionResult:
        """strawberry's, except that a subscription over a plain request (no
        streaming Accept header) is refused with a clear error: executed like a
        query it could only fail."""
        method = request_adapter.method
        allowed = OperationType.from_http(method) - {OperationType.SUBSCRIPTION}
        try:
            return await self.schema.execute(
                request_data.query,
                root_value=root_value,
                variable_values=request_data.variables,
                context_value=context,
                operation_name=request_data.operation_name,
                allowed_operation_types=allowed,
                operation_extensions=request_data.extensions,
            )
        except CannotGetOperationTypeError as e:
            raise HTTPException(400, e.as_http_error_reason()) from e
        except InvalidOperationTypeError as e:
            if e.operation_type is OperationType.SUBSCRIPTION:
                return await _subscription_needs_a_stream(context)
            raise HTTPException(400, e.as_http_error_reason(method)) from e
        except MissingQueryError as e:
            raise HTTPException(400, "No GraphQL query found in the request") from e

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
        counted = context.request.scope.get("state", {}).pop("agentgraph.anonymous_count", None)
        if counted is not None:
            # Signed in: its handshake was no anonymous request after all.
            await self.anonymous_limit.refund(context.services.redis, *counted)
        # A slot of the user signed in now (TooManyConnections: 4429), maybe in
        # place of the one the upgrade headers' user took.
        self.connection_slots.hold(context, principal.user_id)

    def create_response(self, response_data: Any, sub_response: Response) -> Response:
        """strawberry's; a `graphs` answer from the cache is sent as it was
        stored (schema/response_cache.py), never decoded and encoded again."""
        cached = response_data.get("data") if isinstance(response_data, dict) else None
        if not isinstance(cached, CachedBody):
            return super().create_response(response_data, sub_response)
        if len(response_data) > 1:  # errors or extensions beside it: JSON as usual
            data = orjson.Fragment(cached.data())
            return super().create_response({**response_data, "data": data}, sub_response)
        response = Response(
            cached.body, status_code=sub_response.status_code or 200, media_type="application/json"
        )
        response.headers.raw.extend(sub_response.headers.raw)
        response.background = sub_response.background
        if cached.encoding:
            response.headers["Content-Encoding"] = cached.encoding
        return response

    def encode_json(self, data: object) -> str:
        # Text, not bytes: strawberry sends bytes as binary websocket frames, which
        # graphql-ws, Apollo and GraphiQL refuse ("Message is missing the 'type'
        # property").
        payload = data.get("payload") if isinstance(data, dict) else None
        if isinstance(payload, dict) and len(payload) == 1 and "data" in payload:
            # A subscription event's result shared by its subscribers (schema/executor.py):
            # its JSON is made once, each subscriber's message only wraps it.
            encoded = SHARED_RESULTS.encoded(payload["data"])
            if encoded is not None:
                return orjson.dumps({**data, "payload": {"data": encoded}}).decode()
        return orjson.dumps(data).decode()

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
        await self._charge_anonymous_introspection(request)
        return await super().process_result(request, result)

    async def _charge_anonymous_introspection(self, request: Request) -> None:
        """An anonymous request counts once more per INTROSPECTION_FIELDS_PER_REQUEST
        introspection fields it resolved: introspection costs CPU alone, and
        anyone may ask for it."""
        context = getattr(request.state, "graphql_context", None)
        if context is None or not context.introspection_fields:
            return
        fields, context.introspection_fields = context.introspection_fields, 0
        _, principal, _ = request.scope.get("state", {}).get("agentgraph.sign_in", (None,) * 3)
        if principal is None:
            await self.anonymous_limit.charge(
                request.app.state.services.redis,
                client_address(request.scope, self.settings),
                fields // INTROSPECTION_FIELDS_PER_REQUEST,
            )

    async def aclose(self) -> None:
        await self.credential_watch.aclose()


async def _no_body() -> dict:
    return {"type": "http.disconnect"}


SUBSCRIPTION_NEEDS_A_STREAM = (
    "Subscriptions need a websocket (graphql-transport-ws) or an HTTP stream: send "
    "Accept: multipart/mixed;subscriptionSpec=1.0 (Apollo's multipart protocol) or "
    "Accept: text/event-stream (GraphQL over SSE)"
)


async def _subscription_needs_a_stream(context: Context) -> ExecutionResult:
    """The answer to a subscription sent as a plain request: UNAUTHENTICATED
    without valid credentials (as on every transport), else BAD_USER_INPUT."""
    try:
        await context.principal()
    except AppError as exc:
        return _error_result(exc)
    return _error_result(bad_input(SUBSCRIPTION_NEEDS_A_STREAM))


def _error_result(error: AppError) -> ExecutionResult:
    wrapped = GraphQLError(error.message, original_error=error)
    return ExecutionResult(data=None, errors=present_errors([wrapped]))
