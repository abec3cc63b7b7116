"""Stripe's webhook events: verified, deduplicated by event id, then applied.

An event id is stored only after its effect is in the ledger, so a failure
half-way makes Stripe retry it; every effect is keyed in the ledger too, so
events delivered concurrently (before either is stored) still apply once.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

import stripe
from tortoise.exceptions import IntegrityError

from app.clients.stripe_gateway import checkout_state_of
from app.errors import AppError, ErrorCode, bad_input
from app.models import CreditTransaction, CreditTransactionType, ProcessedStripeEvent, User
from app.services import credits, ledger
from app.settings import Settings

log = logging.getLogger(__name__)

CHECKOUT_PAID = ("checkout.session.completed", "checkout.session.async_payment_succeeded")
HANDLED = (*CHECKOUT_PAID, "charge.dispute.created", "charge.dispute.closed", "refund.created")


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
    except ValueError as error:
        raise bad_input("Malformed webhook payload") from error
    if not isinstance(data, dict) or not all(
        isinstance(data.get(name), str) for name in ("id", "type")
    ):
        raise bad_input("Malformed webhook payload")
    if not isinstance((data.get("data") or {}).get("object"), dict):
        raise bad_input("Malformed webhook payload")
    return data


async def handle(settings: Settings, payload: bytes, signature: str | None) -> str:
    """What became of the event: "applied", "ignored" or "duplicate"."""
    event = verify(settings, payload, signature)
    event_id, event_type = event["id"], event["type"]
    if await ProcessedStripeEvent.exists(id=event_id):
        return "duplicate"
    if event_type in HANDLED:
        await _apply(settings, event_type, event["data"]["object"])
        outcome = "applied"
    else:
        outcome = "ignored"
    try:
        await ProcessedStripeEvent.create(id=event_id, type=event_type[:100])
    except IntegrityError:
        return "duplicate"  # the same event, delivered twice at once
    return outcome


async def _apply(settings: Settings, event_type: str, obj: dict[str, Any]) -> None:
    if event_type in CHECKOUT_PAID:
        await credits.credit_paid_checkout(checkout_state_of(obj))
    elif event_type == "charge.dispute.created":
        await _dispute_lost_or_opened(settings, obj)
    elif event_type == "charge.dispute.closed":
        if obj.get("status") == "lost":
            await _dispute_lost_or_opened(settings, obj)
        elif obj.get("status") == "won":
            await _dispute_won(settings, obj)
    elif event_type == "refund.created":
        await _refund_created(settings, obj)


async def _owner(settings: Settings, obj: dict[str, Any]) -> uuid.UUID | None:
    """The user a dispute or refund is about: from metadata, else from the
    charge's metadata or customer (asked of Stripe)."""
    named = (obj.get("metadata") or {}).get("user_id")
    customer = None
    charge = obj.get("charge")
    if not named and isinstance(charge, str):
        named, customer = await credits.gateway(settings).owner_of_charge(charge)
    if named:
        try:
            user_id = uuid.UUID(named)
        except ValueError:
            return None
        return user_id if await User.exists(id=user_id) else None
    if customer:
        found = await User.get_or_none(stripe_customer_id=customer).only("id")
        return found.id if found else None
    return None


def _amount(obj: dict[str, Any]) -> int | None:
    amount = obj.get("amount")
    return amount if isinstance(amount, int) and amount > 0 else None


async def _dispute_lost_or_opened(settings: Settings, dispute: dict[str, Any]) -> None:
    # Opened and lost share one key: the money leaves once.
    owner, amount = await _owner(settings, dispute), _amount(dispute)
    if owner is None or amount is None:
        log.warning("dispute %s is not about a known user; ignored", dispute.get("id"))
        return
    await ledger.record_transaction(
        owner,
        -amount,
        CreditTransactionType.REFUND,
        key=f"dispute:{dispute['id']}",
        allow_negative=True,
        description="Payment disputed",
        metadata={"dispute": dispute["id"]},
    )


async def _dispute_won(settings: Settings, dispute: dict[str, Any]) -> None:
    owner, amount = await _owner(settings, dispute), _amount(dispute)
    if owner is None or amount is None:
        return
    taken = await CreditTransaction.exists(key=f"dispute:{dispute['id']}", user_id=owner)
    if not taken:
        return
    await ledger.record_transaction(
        owner,
        amount,
        CreditTransactionType.REFUND,
        key=f"dispute-won:{dispute['id']}",
        description="Dispute won: credits restored",
        metadata={"dispute": dispute["id"]},
    )


async def _refund_created(settings: Settings, refund: dict[str, Any]) -> None:
    owner, amount = await _owner(settings, refund), _amount(refund)
    if owner is None or amount is None:
        log.warning("refund %s is not about a known user; ignored", refund.get("id"))
        return
    await credits.record_refund(owner, refund["id"], amount, "Refunded through Stripe")
