"""Every call this product makes to Stripe, through the official SDK only.

`STRIPE_API_BASE` points the SDK elsewhere (the tests run a local stand-in).
A Stripe failure becomes PAYMENT_PROVIDER_ERROR with Stripe's own message for
card errors (the user can act on those) and a generic one otherwise.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import stripe

from app.errors import AppError, ErrorCode
from app.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class CheckoutState:
    session_id: str
    paid: bool
    payment_intent: str | None
    metadata: dict[str, str]


@dataclass(frozen=True)
class OffSessionCharge:
    payment_intent: str
    succeeded: bool


class StripeGateway:
    def __init__(self, settings: Settings) -> None:
        if not settings.STRIPE_SECRET_KEY:
            raise AppError(ErrorCode.PAYMENT_PROVIDER_ERROR, "Payments are not configured")
        base = {"api": settings.STRIPE_API_BASE} if settings.STRIPE_API_BASE else None
        self._client = stripe.StripeClient(
            settings.STRIPE_SECRET_KEY,
            base_addresses=base,
            http_client=stripe.HTTPXClient(timeout=20),
            max_network_retries=2,
        )
        self._settings = settings

    @staticmethod
    async def _call(what: str, call: Callable[[], Awaitable[T]]) -> T:
        try:
            return await call()
        except stripe.CardError as error:
            raise AppError(
                ErrorCode.PAYMENT_PROVIDER_ERROR, error.user_message or "The card was declined"
            ) from error
        except stripe.StripeError as error:
            log.warning("stripe %s failed: %s", what, error)
            raise AppError(
                ErrorCode.PAYMENT_PROVIDER_ERROR, "The payment provider did not answer"
            ) from error

    async def create_customer(self, user_id: str, email: str) -> str:
        customer = await self._call(
            "customer",
            lambda: self._client.v1.customers.create_async(
                {"email": email, "metadata": {"user_id": user_id}},
                # One customer per user even when two first needs race.
                {"idempotency_key": f"customer-{user_id}"},
            ),
        )
        return customer.id

    async def create_checkout(self, *, customer: str, user_id: str, amount: int) -> tuple[str, str]:
        """A hosted Checkout for `amount` cents; returns (session id, url)."""
        base = self._settings.FRONTEND_BASE_URL.rstrip("/")
        metadata = {"user_id": user_id, "credits": str(amount), "kind": "top_up"}
        session = await self._call(
            "checkout",
            lambda: self._client.v1.checkout.sessions.create_async(
                {
                    "mode": "payment",
                    "customer": customer,
                    "line_items": [
                        {
                            "quantity": 1,
                            "price_data": {
                                "currency": "usd",
                                "unit_amount": amount,
                                "product_data": {"name": "agentgraph credits"},
                            },
                        }
                    ],
                    # The card is saved so auto top-up can charge it later.
                    "payment_intent_data": {
                        "setup_future_usage": "off_session",
                        "metadata": metadata,
                    },
                    "saved_payment_method_options": {"payment_method_save": "enabled"},
                    "metadata": metadata,
                    "success_url": f"{base}/profile/credits?topup=success",
                    "cancel_url": f"{base}/profile/credits?topup=cancel",
                }
            ),
        )
        return session.id, session.url or ""

    async def checkout_state(self, session_id: str) -> CheckoutState:
        session = await self._call(
            "checkout lookup", lambda: self._client.v1.checkout.sessions.retrieve_async(session_id)
        )
        return checkout_state_of(session.to_dict())

    async def refund(
        self, *, payment_intent: str, amount: int, metadata: dict[str, str], idempotency_key: str
    ) -> str:
        """Refund `amount` cents of a payment; the same key never refunds twice."""
        refund = await self._call(
            "refund",
            lambda: self._client.v1.refunds.create_async(
                {"payment_intent": payment_intent, "amount": amount, "metadata": metadata},
                {"idempotency_key": idempotency_key},
            ),
        )
        return refund.id

    async def close_dispute(self, dispute_id: str) -> str:
        """Accept a dispute (Stripe marks it lost); returns its status."""
        dispute = await self._call(
            "dispute close",
            lambda: self._client.v1.disputes.close_async(
                dispute_id, options={"idempotency_key": f"dispute-close-{dispute_id}"}
            ),
        )
        return str(dispute.status)

    async def contest_dispute(self, dispute_id: str, evidence: dict[str, str]) -> str:
        """Submit evidence to the bank at once; returns the dispute's status."""
        dispute = await self._call(
            "dispute evidence",
            lambda: self._client.v1.disputes.update_async(
                dispute_id,
                {"evidence": evidence, "submit": True},  # type: ignore[typeddict-item]
                {"idempotency_key": f"dispute-evidence-{dispute_id}"},
            ),
        )
        return str(dispute.status)

    async def owner_of_charge(self, charge_id: str) -> tuple[str | None, str | None]:
        """(user id from the charge's metadata, its customer id)."""
        charge = await self._call(
            "charge lookup", lambda: self._client.v1.charges.retrieve_async(charge_id)
        )
        data = charge.to_dict()
        return (data.get("metadata") or {}).get("user_id"), data.get("customer")

    async def billing_portal(self, customer: str) -> str:
        base = self._settings.FRONTEND_BASE_URL.rstrip("/")
        portal = await self._call(
            "billing portal",
            lambda: self._client.v1.billing_portal.sessions.create_async(
                {"customer": customer, "return_url": f"{base}/profile/credits"}
            ),
        )
        return portal.url

    async def charge_saved_card(
        self, *, customer: str, amount: int, user_id: str, idempotency_key: str
    ) -> OffSessionCharge:
        """Charge the customer's saved card without them present (auto top-up)."""
        methods = await self._call(
            "payment methods",
            lambda: self._client.v1.customers.payment_methods.list_async(
                customer, {"type": "card", "limit": 1}
            ),
        )
        if not methods.data:
            raise AppError(ErrorCode.PAYMENT_PROVIDER_ERROR, "No saved card to charge")
        intent = await self._call(
            "off-session charge",
            lambda: self._client.v1.payment_intents.create_async(
                {
                    "amount": amount,
                    "currency": "usd",
                    "customer": customer,
                    "payment_method": methods.data[0].id,
                    "off_session": True,
                    "confirm": True,
                    "metadata": {"user_id": user_id, "credits": str(amount), "kind": "auto"},
                },
                {"idempotency_key": idempotency_key},
            ),
        )
        return OffSessionCharge(payment_intent=intent.id, succeeded=intent.status == "succeeded")


def checkout_state_of(session: dict[str, Any]) -> CheckoutState:
    """A Checkout Session (as a dict, from the API or a webhook event) as what we need."""
    metadata = dict(session.get("metadata") or {})
    payment_intent = session.get("payment_intent")
    if isinstance(payment_intent, dict):
        payment_intent = payment_intent.get("id")
    return CheckoutState(
        session_id=session["id"],
        paid=session.get("payment_status") == "paid",
        payment_intent=payment_intent,
        metadata=metadata,
    )
