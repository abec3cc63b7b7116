"""ASGI middleware around every route: request ids, latency, body size."""

from __future__ import annotations

import json
import re
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import log_context
from app.errors import ErrorCode
from app.metrics import REQUEST_SECONDS


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
        request_id = start_request_log(scope)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        await self.app(scope, receive, send_with_id)


def start_request_log(scope: Scope) -> str:
    """Starts the log context of a request or websocket under its request id
    (the client's `X-Request-ID` when it is sane, else a new one)."""
    given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
    request_id = given if _SANE_REQUEST_ID.fullmatch(given) else log_context.new_request_id()
    log_context.start(request_id=request_id)
    return request_id


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
