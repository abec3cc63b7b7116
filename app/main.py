"""The ASGI app: routes, the GraphQL view, and the lifespan that owns connections."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from arq import ArqRedis
from prometheus_client import generate_latest
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.types.unset import UNSET
from tortoise import Tortoise, connections

from app import log_context
from app.auth import authenticate, credentials_from
from app.clients.redis import arq_queue_name, create_redis, metrics_counter_key
from app.context import Context
from app.errors import AppError, ErrorCode
from app.events import EventHub, EventPublisher, EventReader
from app.metrics import GRAPHQL_REQUESTS, REGISTRY, REQUEST_SECONDS, shared_metric_families
from app.rest.files import upload_file
from app.rest.stripe_webhook import stripe_webhook
from app.services.blocks import BlockCatalog
from app.settings import Settings, get_settings, tortoise_config
from app.websocket_limits import (
    ConnectionSlots,
    LimitedLegacyWSHandler,
    LimitedTransportWSHandler,
)
from resolvers.loaders import Loaders
from schema import build_schema

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
GRAPHIQL_TEMPLATE = (Path(__file__).parent / "templates" / "graphiql.html").read_text()
GRAPHIQL_ASSETS = "/static/graphiql"


@dataclass
class AppServices:
    """What the lifespan opened; every request and resolver reaches it through the context."""

    settings: Settings
    # Redis for events, caches and counters; also enqueues arq jobs.
    redis: ArqRedis
    blocks: BlockCatalog
    publisher: EventPublisher
    events: EventReader
    hub: EventHub

    async def aclose(self) -> None:
        await self.hub.aclose()
        await self.blocks.aclose()
        await self.redis.aclose()


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


class BodySizeLimit:
    """Refuses GraphQL requests larger than MAX_BODY_BYTES before anything parses them."""

    def __init__(self, app: ASGIApp, max_bytes: int, path: str = "/graphql") -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send)
            return
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _BodyTooLarge
            return message

        try:
            await self.app(scope, counting_receive, send)
        except _BodyTooLarge:
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps(
            {
                "data": None,
                "errors": [
                    {
                        "message": f"Request body larger than {self.max_bytes} bytes",
                        "extensions": {"code": ErrorCode.QUERY_TOO_COMPLEX.value},
                    }
                ],
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class _BodyTooLarge(Exception):
    pass


class RequestContext:
    """Gives every HTTP request and websocket connection a request id (the
    client's `X-Request-ID` when it is sane) for the log lines it causes, and
    echoes it in the response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _SANE_REQUEST_ID.fullmatch(given) else log_context.new_request_id()
        log_context.start(request_id=request_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        await self.app(scope, receive, send_with_id)


_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


class RequestTimer:
    """Latency per known route; other paths share one label so they cannot grow the series."""

    ROUTES = frozenset({"/graphql", "/health", "/metrics", "/api/files", "/api/stripe/webhook"})

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            route = scope["path"] if scope["path"] in self.ROUTES else "other"
            REQUEST_SECONDS.labels(route=route).observe(time.perf_counter() - started)


async def health(request: Request) -> JSONResponse:
    services: AppServices = request.app.state.services
    checks: dict[str, str] = {}
    try:
        await connections.get("default").execute_query("SELECT 1")
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"error: {type(exc).__name__}"
    try:
        await services.redis.ping()
        checks["redis"] = "ok"
    except Exception as exc:
        checks["redis"] = f"error: {type(exc).__name__}"
    healthy = all(value == "ok" for value in checks.values())
    return JSONResponse(
        {"status": "ok" if healthy else "unavailable", **checks},
        status_code=200 if healthy else 503,
    )


class _SharedMetrics(Collector):
    """Counters that workers keep in Redis, read at scrape time."""

    def __init__(self) -> None:
        self.snapshot: tuple[dict[str, int], int] = ({}, 0)

    def collect(self):
        yield from shared_metric_families(*self.snapshot)


_shared_metrics = _SharedMetrics()
REGISTRY.register(_shared_metrics)


async def metrics(request: Request) -> Response:
    services: AppServices = request.app.state.services
    try:
        raw = await services.redis.hgetall(metrics_counter_key(services.settings))
        counters = {k.decode(): int(v) for k, v in raw.items()}
        depth = await services.redis.zcard(arq_queue_name(services.settings))
        _shared_metrics.snapshot = (counters, depth)
    except Exception:
        log.warning("metrics: Redis unavailable, shared counters omitted")
    return Response(generate_latest(REGISTRY), media_type="text/plain; version=0.0.4")


async def start_services(settings: Settings) -> AppServices:
    """The long-lived clients one API process shares across requests."""
    redis = create_redis(settings)
    hub = EventHub(settings.REDIS_URL)
    await hub.start()
    return AppServices(
        settings=settings,
        redis=redis,
        blocks=BlockCatalog(settings),
        publisher=EventPublisher(redis, settings.REDIS_PREFIX),
        events=EventReader(redis, settings.REDIS_PREFIX),
        hub=hub,
    )


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or get_settings()
    settings.check_secrets()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await Tortoise.init(
            config=tortoise_config(settings.DATABASE_URL), _enable_global_fallback=True
        )
        app.state.services = await start_services(settings)
        try:
            yield
        finally:
            await app.state.services.aclose()
            await Tortoise.close_connections()

    view = GraphQLView(settings)
    routes = [
        Route("/graphql", view, methods=["GET", "POST"]),
        WebSocketRoute("/graphql", view),
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/api/files", upload_file, methods=["POST"]),
        Route("/api/stripe/webhook", stripe_webhook, methods=["POST"]),
    ]
    if settings.GRAPHQL_EXPLORER:
        routes.append(Mount("/static", StaticFiles(directory=STATIC_DIR, check_dir=False)))
    app = Starlette(routes=routes, lifespan=lifespan)
    app.add_middleware(BodySizeLimit, max_bytes=settings.MAX_BODY_BYTES)
    app.add_middleware(RequestTimer)
    app.add_middleware(RequestContext)
    return app
