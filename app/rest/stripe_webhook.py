"""`POST /api/stripe/webhook`: Stripe's events, verified and applied once."""

from __future__ import annotations

import logging
import uuid

from starlette.requests import Request
from starlette.responses import JSONResponse

from app.errors import AppError, ErrorCode
from app.metrics import STRIPE_WEBHOOKS
from app.rest.errors import app_error_response, error_response
from app.services import stripe_webhooks

log = logging.getLogger(__name__)

# Stripe's events are a few kilobytes; anything far larger is not from Stripe.
MAX_WEBHOOK_BYTES = 512 * 1024


async def stripe_webhook(request: Request) -> JSONResponse:
    services = request.app.state.services
    settings = services.settings
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_WEBHOOK_BYTES:
        return error_response(ErrorCode.BAD_USER_INPUT, "Webhook payload too large")
    payload = bytearray()
    async for chunk in request.stream():
        payload += chunk
        if len(payload) > MAX_WEBHOOK_BYTES:
            return error_response(ErrorCode.BAD_USER_INPUT, "Webhook payload too large")
    try:
        outcome = await stripe_webhooks.handle(
            settings, services.notifier, bytes(payload), request.headers.get("stripe-signature")
        )
    except AppError as error:
        STRIPE_WEBHOOKS.labels(outcome="refused").inc()
        return app_error_response(error)
    except Exception:
        # Stripe retries a 5xx, which is right for a database that was away; the
        # answer is still JSON, and the log line has the details.
        error_id = uuid.uuid4().hex
        log.exception("unexpected error %s in the Stripe webhook", error_id)
        STRIPE_WEBHOOKS.labels(outcome="failed").inc()
        return JSONResponse(
            {
                "error": ErrorCode.INTERNAL.value,
                "message": "Internal server error",
                "errorId": error_id,
            },
            status_code=500,
        )
    STRIPE_WEBHOOKS.labels(outcome=outcome).inc()
    return JSONResponse({"received": True, "outcome": outcome})
