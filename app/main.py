"""The ASGI app: routes, middleware, and the lifespan that owns connections."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send
from tortoise import Tortoise

from app.graphql_view import GraphQLView
from app.middleware import BodySizeLimit, RequestContext, RequestTimer, start_request_log
from app.rest.files import upload_file
from app.rest.health import health, metrics
from app.rest.stripe_webhook import stripe_webhook
from app.rest.triggers import trigger_delivery
from app.runtime import start_services
from app.settings import Settings, get_settings, tortoise_config

STATIC_DIR = Path(__file__).parent / "static"
GRAPHQL_PATH = "/graphql"

# What a browser page on an allowed origin may send and read (every route).
CORS_ALLOWED_HEADERS = ["Authorization", "Content-Type", "X-API-Key", "Accept", "X-Request-ID"]
CORS_EXPOSED_HEADERS = ["X-Request-Id"]
# Browsers keep a preflight answer this long (Chromium caps it at 2 hours).
CORS_MAX_AGE_SECONDS = 7200


def settle_garbage_collector(settings: Settings) -> None:
    """What start-up made (modules, the schema, the pools) lives as long as the
    process: frozen out of the collector's sight, full collections stop walking
    it; and a request makes a few thousand short-lived objects, so the youngest
    generation is collected less often. Together: GC from ~15 % to ~3 % of a
    small request's CPU (issue 14)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(settings.GC_GEN0_THRESHOLD, *gc.get_threshold()[1:])


class AgentGraphApp(Starlette):
    """Starlette, except that a websocket to /graphql goes straight to the GraphQL
    view. Every middleware and the router pass websockets through untouched, yet
    each layer's coroutine would stay suspended for as long as the socket is
    open: ~3.5 KiB a live subscriber (issue 14). The view does its own sign-in,
    origin check and limits; the socket's request id is started here."""

    graphql_view: Any = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and scope["path"] == GRAPHQL_PATH:
            scope["app"] = self
            start_request_log(scope)
            await self.graphql_view(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or get_settings()
    settings.check_secrets()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await Tortoise.init(
            config=tortoise_config(settings.DATABASE_URL), _enable_global_fallback=True
        )
        app.state.services = await start_services(settings)
        settle_garbage_collector(settings)
        try:
            yield
        finally:
            await view.aclose()
            await app.state.services.aclose()
            await Tortoise.close_connections()

    view = GraphQLView(settings)
    routes = [
        Route(GRAPHQL_PATH, view, methods=["GET", "POST"]),
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/api/files", upload_file, methods=["POST"]),
        Route("/api/stripe/webhook", stripe_webhook, methods=["POST"]),
        Route("/api/triggers/{trigger_id}", trigger_delivery, methods=["POST"]),
    ]
    if settings.GRAPHQL_EXPLORER:
        routes.append(Mount("/static", StaticFiles(directory=STATIC_DIR, check_dir=False)))
    app = AgentGraphApp(routes=routes, lifespan=lifespan)
    app.graphql_view = view
    app.add_middleware(BodySizeLimit, max_bytes=settings.MAX_BODY_BYTES)
    app.add_middleware(RequestTimer)
    app.add_middleware(RequestContext)
    # Outermost, so every answer (a 413 or an error too) carries the grant.
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.allowed_origins,
        allow_methods=["GET", "POST"],
        allow_headers=CORS_ALLOWED_HEADERS,
        expose_headers=CORS_EXPOSED_HEADERS,
        allow_credentials=True,
        max_age=CORS_MAX_AGE_SECONDS,
    )
    return app
