"""`POST /api/triggers/{trigger_id}`: a signed webhook delivery starts a run
(app/services/trigger_deliveries.py says who may, and what is recorded)."""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import JSONResponse

from app.errors import AppError, ErrorCode
from app.metrics import TRIGGER_DELIVERIES
from app.rest.errors import app_error_response, error_response
from app.services import trigger_deliveries

log = logging.getLogger(__name__)


def _too_large(limit: int) -> JSONResponse:
    response = error_response(ErrorCode.BAD_USER_INPUT, f"Body larger than {limit} bytes")
    response.status_code = 413  # no error code of its own; the status says which it is
    return response


async def trigger_delivery(request: Request) -> JSONResponse:
    services = request.app.state.services
    settings = services.settings
    live = await trigger_deliveries.live_trigger(request.path_params["trigger_id"])
    if live is None:
        # Unknown, disabled and not-runnable triggers look alike.
        TRIGGER_DELIVERIES.labels(outcome="not_found").inc()
        return error_response(ErrorCode.NOT_FOUND, "Trigger not found")
    limit = settings.TRIGGER_MAX_BODY_BYTES
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        TRIGGER_DELIVERIES.labels(outcome="too_large").inc()
        return _too_large(limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            TRIGGER_DELIVERIES.labels(outcome="too_large").inc()
            return _too_large(limit)
    try:
        result = await trigger_deliveries.deliver(
            settings,
            services.redis,
            services.publisher,
            live,
            bytes(body),
            {key.lower(): value for key, value in request.headers.items()},
        )
    except AppError as error:
        outcome = {
            ErrorCode.UNAUTHENTICATED: "bad_signature",
            ErrorCode.RATE_LIMITED: "rate_limited",
        }.get(error.code, "refused")
        TRIGGER_DELIVERIES.labels(outcome=outcome).inc()
        response = app_error_response(error)
        if "retryAfterSeconds" in error.extensions:
            response.headers["Retry-After"] = str(error.extensions["retryAfterSeconds"])
        return response
    TRIGGER_DELIVERIES.labels(outcome=result.outcome).inc()
    log.info(
        "trigger %s delivery %s: %s", live.trigger.id, result.body.get("deliveryId"), result.outcome
    )
    return JSONResponse(result.body, status_code=result.status_code)
