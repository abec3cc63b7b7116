"""GET /health and GET /metrics."""

from __future__ import annotations

import hmac
import logging

from prometheus_client import generate_latest
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from tortoise import connections

from app.clients.redis import arq_queue_name, arq_run_queue_name, metrics_counter_key
from app.metrics import REGISTRY, shared_metric_families
from app.runtime import AppServices

log = logging.getLogger(__name__)


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


def _metrics_allowed(request: Request, token: str | None) -> bool:
    """Open without METRICS_TOKEN; with it, `Authorization: Bearer <token>`."""
    if not token:
        return True
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode("latin-1"), token.encode("latin-1", "replace")
    )


async def metrics(request: Request) -> Response:
    services: AppServices = request.app.state.services
    if not _metrics_allowed(request, services.settings.METRICS_TOKEN):
        return JSONResponse(
            {"error": "UNAUTHENTICATED", "message": "Send Authorization: Bearer <METRICS_TOKEN>"},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )
    try:
        raw = await services.redis.hgetall(metrics_counter_key(services.settings))
        counters = {k.decode(): int(v) for k, v in raw.items()}
        # Runs have a queue of their own (workers/run_lane.py).
        depth = await services.redis.zcard(arq_queue_name(services.settings))
        depth += await services.redis.zcard(arq_run_queue_name(services.settings))
        _shared_metrics.snapshot = (counters, depth)
    except Exception:
        log.warning("metrics: Redis unavailable, shared counters omitted")
    return Response(generate_latest(REGISTRY), media_type="text/plain; version=0.0.4")
