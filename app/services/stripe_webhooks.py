"""Stripe's webhook events: verified, deduplicated by event id, then applied.

An event id is stored only after its effect is in the ledger, so a failure
half-way makes Stripe retry it; every effect is keyed in the ledger too, so
events delivered concurrently (before either is stored) still apply once.

Every value taken from an event is checked before it reaches the database:
an envelope whose id or type is not a short plain string is refused (400);
a handled event whose object lacks what we need (no usable id, an unknown
owner, odd metadata, an impossible amount) is answered "ignored" with 200,
because Stripe retrying it could not help.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from typing import Any

import stripe
from tortoise.exceptions import IntegrityError

from app.clients.stripe_gateway import CheckoutState
from app.errors import AppError, ErrorCode, bad_input
from app.models import ProcessedStripeEvent, User
from app.services import credits, disputes, refunds
from app.services.disputes import DisputeFacts
from app.services.notifications import Notifier
from app.settings import Settings

log = logging.getLogger(__name__)

CHECKOUT_PAID = ("checkout.session.completed", "checkout.session.async_payment_succeeded")
DISPUTE_EVENTS = ("charge.dispute.created", "charge.dispute.closed")
HANDLED = (*CHECKOUT_PAID, *DISPUTE_EVENTS, "refund.created")
# Stripe's ids (evt_…, cs_…, pi_…, ch_…, dp_…, re_…; well under 100 characters,
# and short enough that our keys built from them fit in 255) and event types.
_STRIPE_ID = re.compile(r"[A-Za-z0-9_\-]{1,200}")
_EVENT_TYPE = re.compile(r"[a-z0-9_.]{1,100}")
# Refunds that moved no money.
_UNPAID_REFUND = ("failed", "canceled")


def stripe_id(value: object) -> str | None:
    """A value usable as a Stripe id, or None."""
    return value if isinstance(value, str) and _STRIPE_ID.fullmatch(value) else None


def verify(settings: Settings, payload: bytes, signature: str | None) -> dict[str, Any]:
    """The event, if the payload is well formed and signed with our secret."""
    if not settings.STRIPE_WEBHOOK_SECRET:
        raise AppError(ErrorCode.PAYMENT_PROVIDER_ERROR, "Payments are not configured")
    if not signature:
        raise bad_input("Missing Stripe-Signature header")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as error:
        raise bad_input("Malformed webhook payload") from error
    try:
        stripe.WebhookSignature.verify_header(
            text, signature, settings.STRIPE_WEBHOOK_SECRET, stripe.Webhook.DEFAULT_TOLERANCE
        )
    except stripe.SignatureVerificationError as error:
        raise bad_input("Bad webhook signature") from error
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as error:
        raise bad_input("Malformed webhook payload") from error
    if not isinstance(data, dict):
        raise bad_input("Malformed webhook payload")
    if stripe_id(data.get("id")) is None:
        raise bad_input("Malformed webhook payload: the event id is not a Stripe id")
    event_type = data.get("type")
    if not isinstance(event_type, str) or not _EVENT_TYPE.fullmatch(event_type):
        raise bad_input("Malformed webhook payload: the event type is not a Stripe type")
    if not isinstance(data.get("data"), dict) or not isinstance(data["data"].get("object"), dict):
        raise bad_input("Malformed webhook payload: no data.object")
    return data


async def handle(
    settings: Settings, notifier: Notifier, payload: bytes, signature: str | None
) -> str:
    """What became of the event: "applied", "ignored" or "duplicate"."""
    event = verify(settings, payload, signature)
    event_id, event_type = event["id"], event["type"]
    if await ProcessedStripeEvent.exists(id=event_id):
        return "duplicate"
    if event_type in HANDLED:
        outcome = await _apply(settings, notifier, event_type, event["data"]["object"])
    else:
        outcome = "ignored"
    try:
        await ProcessedStripeEvent.create(id=event_id, type=event_type)
    except IntegrityError:
        return "duplicate"  # the same event, delivered twice at once
    return outcome


async def _apply(
    settings: Settings, notifier: Notifier, event_type: str, obj: dict[str, Any]
) -> str:
    object_id = stripe_id(obj.get("id"))
    if object_id is None:
        log.warning("%s event without a usable object id; ignored", event_type)
        return "ignored"
    if event_type in CHECKOUT_PAID:
        await credits.credit_paid_checkout(_checkout_state(object_id, obj))
        return "applied"
    owner, amount = await _owner(settings, obj), _amount(obj)
    if owner is None or amount is None:
        log.warning("%s %s is not about a known user and amount; ignored", event_type, object_id)
        return "ignored"
    payment_intent = _nested_id(obj.get("payment_intent"))
    if event_type in DISPUTE_EVENTS:
        facts = DisputeFacts(object_id, owner, amount, payment_intent)
        if event_type == "charge.dispute.created":
            await disputes.dispute_created(settings, notifier, facts)
            return "applied"
        status = obj.get("status")
        if not isinstance(status, str):
            return "ignored"
        await disputes.dispute_closed(facts, status)
        return "applied"
    if obj.get("status") in _UNPAID_REFUND:
        return "ignored"
    await refunds.refund_created(
        notifier, owner, object_id, amount, _metadata(obj).get("transaction_key"), payment_intent
    )
    return "applied"


def _nested_id(value: object) -> str | None:
    """An id field, expanded (an object) or not (its id)."""
    if isinstance(value, dict):
        value = value.get("id")
    return stripe_id(value)


def _metadata(obj: dict[str, Any]) -> dict[str, str]:
    """Stripe metadata is string to string; anything else is dropped."""
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict):
        return {}
    return {
        key: value
        for key, value in metadata.items()
        if isinstance(key, str)
        and isinstance(value, str)
        and "\x00" not in value
        and len(value) <= 500
    }


def _checkout_state(session_id: str, session: dict[str, Any]) -> CheckoutState:
    return CheckoutState(
        session_id=session_id,
        paid=session.get("payment_status") == "paid",
        payment_intent=_nested_id(session.get("payment_intent")),
        metadata=_metadata(session),
    )


async def _owner(settings: Settings, obj: dict[str, Any]) -> uuid.UUID | None:
    """The user a dispute or refund is about: from metadata, else from the
    charge's metadata or customer (asked of Stripe)."""
    named: object = _metadata(obj).get("user_id")
    customer: object = None
    charge = _nested_id(obj.get("charge"))
    if not named and charge is not None:
        named, customer = await credits.gateway(settings).owner_of_charge(charge)
    if isinstance(named, str) and named:
        try:
            user_id = uuid.UUID(named)
        except ValueError:
            return None
        return user_id if await User.exists(id=user_id) else None
    customer = stripe_id(customer)
    if customer:
        found = await User.get_or_none(stripe_customer_id=customer).only("id")
        return found.id if found else None
    return None


def _amount(obj: dict[str, Any]) -> int | None:
    amount = obj.get("amount")
    valid = isinstance(amount, int) and not isinstance(amount, bool)
    return amount if valid and 0 < amount <= credits.MAX_TOP_UP else None
