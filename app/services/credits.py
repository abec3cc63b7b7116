"""Credits beyond the ledger core: Stripe top-ups, refunds, auto top-up, history.

Exactly-once crediting rests on the ledger: a top-up is one transaction keyed
by its Checkout Session id (or, for auto top-ups, its PaymentIntent id), and
activating or recording it happens under the user's balance row lock. So any
number of webhooks, replays and fulfillCheckout calls, in any order and at the
same time, credit it once.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime

from tortoise.exceptions import IntegrityError

from app.clients.stripe_gateway import CheckoutState, StripeGateway
from app.clock import utcnow
from app.errors import AppError, ErrorCode, bad_input
from app.models import (
    AutoTopUpConfig,
    CreditTransaction,
    CreditTransactionType,
    User,
)
from app.services import ledger
from app.services.pagination import encode_cursor, rows_after
from app.settings import Settings

log = logging.getLogger(__name__)

MIN_TOP_UP = 500
# $10,000 at once: far above any real top-up, far below the 32-bit balance.
MAX_TOP_UP = 1_000_000
MAX_HISTORY_PAGE = 1000


def gateway(settings: Settings) -> StripeGateway:
    return StripeGateway(settings)


async def ensure_customer(gw: StripeGateway, user_id: uuid.UUID) -> str:
    """The user's Stripe customer, created on first need."""
    user = await User.get(id=user_id)
    if user.stripe_customer_id:
        return user.stripe_customer_id
    customer = await gw.create_customer(str(user_id), user.email)
    # Two first needs at once get the same customer (Stripe idempotency key);
    # only the first write lands.
    await User.filter(id=user_id, stripe_customer_id=None).update(stripe_customer_id=customer)
    user = await User.get(id=user_id)
    return user.stripe_customer_id or customer


def _check_amount(amount: int, what: str) -> None:
    if amount < MIN_TOP_UP:
        raise bad_input(f"{what} must be at least {MIN_TOP_UP} credits", minimum=MIN_TOP_UP)
    if amount > MAX_TOP_UP:
        raise bad_input(f"{what} must be at most {MAX_TOP_UP} credits", maximum=MAX_TOP_UP)


# ------------------------------------------------------------------ top-ups


@dataclass(frozen=True)
class Checkout:
    session_id: str
    url: str


async def request_top_up(settings: Settings, user_id: uuid.UUID, amount: int) -> Checkout:
    _check_amount(amount, "amount")
    gw = gateway(settings)
    customer = await ensure_customer(gw, user_id)
    session_id, url = await gw.create_checkout(
        customer=customer, user_id=str(user_id), amount=amount
    )
    await ledger.record_transaction(
        user_id,
        amount,
        CreditTransactionType.TOP_UP,
        key=session_id,
        active=False,
        description="Top-up",
        metadata={"checkout_session": session_id},
    )
    return Checkout(session_id=session_id, url=url)


async def credit_paid_checkout(state: CheckoutState) -> bool:
    """Credit a paid Checkout Session once; True when this call credited it."""
    if not state.paid:
        return False
    extra = {"payment_intent": state.payment_intent} if state.payment_intent else {}
    entry = await ledger.activate_transaction(state.session_id, metadata=extra)
    if entry is not None:
        return entry.created
    # The webhook came before requestTopUp stored its row (or for a session
    # made elsewhere): the session's own metadata names the user and amount.
    owner, credits = _top_up_metadata(state)
    if owner is None or credits is None or not await User.exists(id=owner):
        log.warning("paid checkout %s names no known user; ignored", state.session_id)
        return False
    try:
        recorded = await ledger.record_transaction(
            owner,
            credits,
            CreditTransactionType.TOP_UP,
            key=state.session_id,
            description="Top-up",
            metadata={"checkout_session": state.session_id, **extra},
        )
    except AppError as error:  # the key belongs to another user: not ours to credit
        log.warning("checkout %s: %s", state.session_id, error.message)
        return False
    if recorded.created:
        return True
    # requestTopUp stored it (inactive) in between: activate it now.
    entry = await ledger.activate_transaction(state.session_id, metadata=extra)
    return bool(entry and entry.created)


def _top_up_metadata(state: CheckoutState) -> tuple[uuid.UUID | None, int | None]:
    if state.metadata.get("kind") != "top_up":
        return None, None
    named, amount = state.metadata.get("user_id"), state.metadata.get("credits")
    if not isinstance(named, str) or not isinstance(amount, str | int):
        return None, None
    try:
        owner = uuid.UUID(named)
        credits = int(amount)
    except ValueError:
        return None, None
    return (owner, credits) if MIN_TOP_UP <= credits <= MAX_TOP_UP else (None, None)


async def fulfill_checkout(settings: Settings, user_id: uuid.UUID) -> int:
    """Ask Stripe about the user's unpaid checkouts; credit the paid ones."""
    open_keys = await CreditTransaction.filter(
        user_id=user_id, type=CreditTransactionType.TOP_UP, is_active=False
    ).values_list("key", flat=True)
    if not open_keys:
        return 0
    gw = gateway(settings)
    credited = 0
    for key in open_keys:
        state = await gw.checkout_state(str(key))
        if state.paid and await credit_paid_checkout(state):
            credited += 1
    return credited


# ------------------------------------------------------------------ refunds
# Requests and decisions live in app/services/refunds.py.


async def record_refund(user_id: uuid.UUID, refund_id: str, amount: int, description: str) -> bool:
    """Take refunded money's credits back, once per Stripe refund id."""
    entry = await ledger.record_transaction(
        user_id,
        -amount,
        CreditTransactionType.REFUND,
        key=f"refund:{refund_id}",
        # The money is gone already; the balance may have to go below zero.
        allow_negative=True,
        description=description,
        metadata={"refund": refund_id},
    )
    return entry.created


# ------------------------------------------------------------------ auto top-up


async def get_auto_top_up(user_id: uuid.UUID) -> AutoTopUpConfig:
    config = await AutoTopUpConfig.get_or_none(user_id=user_id)
    return config or AutoTopUpConfig(user_id=user_id, threshold=0, amount=0)


async def configure_auto_top_up(
    settings: Settings, user_id: uuid.UUID, threshold: int, amount: int
) -> AutoTopUpConfig:
    """Save the rule; when the balance is already below the threshold, top up
    at once (the rule is saved only if that charge succeeds)."""
    if threshold < 0:
        raise bad_input("threshold must be at least 0")
    if amount != 0:
        _check_amount(amount, "amount")
        if amount < threshold:
            raise bad_input("amount must be at least the threshold")
    elif threshold > MAX_TOP_UP:
        raise bad_input(f"threshold must be at most {MAX_TOP_UP}")
    if amount > 0:
        gw = gateway(settings)
        if await ledger.get_balance(user_id) < threshold:
            # A client repeating this call (no transaction since) reuses the key.
            latest = await _latest_transaction_id(user_id)
            await _charge_saved_card(gw, user_id, amount, f"auto-top-up-{user_id}-{latest}")
    await _store_auto_top_up(user_id, threshold, amount)
    return await get_auto_top_up(user_id)


async def _store_auto_top_up(user_id: uuid.UUID, threshold: int, amount: int) -> None:
    # Not update_or_create(): its save() binds this one-to-one row's UUID key raw,
    # which SQLite refuses (every change after the first answered INTERNAL).
    changes = {"threshold": threshold, "amount": amount, "updated_at": utcnow()}
    if await AutoTopUpConfig.filter(user_id=user_id).update(**changes):
        return
    try:
        await AutoTopUpConfig.create(user_id=user_id, **changes)
    except IntegrityError:  # a concurrent first call created it
        await AutoTopUpConfig.filter(user_id=user_id).update(**changes)


async def run_auto_top_up(settings: Settings, user_id: uuid.UUID, cause: str | None = None) -> str:
    """The worker's side of the auto top-up hook: charge the saved card for the
    configured amount when the balance is still below the threshold. `cause` (the
    key of the charge that crossed the threshold) names the attempt at Stripe, so
    a retried job never charges twice, whatever was charged in between."""
    config = await AutoTopUpConfig.get_or_none(user_id=user_id)
    if config is None or config.amount <= 0:
        return "off"
    if await ledger.get_balance(user_id) >= config.threshold:
        return "not needed"
    if not settings.STRIPE_SECRET_KEY:
        return "payments not configured"
    attempt = cause if cause is not None else await _latest_transaction_id(user_id)
    key = f"auto-top-up-{user_id}-{attempt}"
    credited = await _charge_saved_card(gateway(settings), user_id, config.amount, key)
    return "credited" if credited else "already credited"


async def _latest_transaction_id(user_id: uuid.UUID) -> object:
    return (
        await CreditTransaction.filter(user_id=user_id, is_active=True)
        .order_by("-created_at", "-id")
        .first()
        .values_list("id", flat=True)
    )


async def _charge_saved_card(
    gw: StripeGateway, user_id: uuid.UUID, amount: int, idempotency_key: str
) -> bool:
    customer = await ensure_customer(gw, user_id)
    charge = await gw.charge_saved_card(
        customer=customer,
        amount=amount,
        user_id=str(user_id),
        idempotency_key=idempotency_key[:255],
    )
    if not charge.succeeded:
        raise AppError(ErrorCode.PAYMENT_PROVIDER_ERROR, "The saved card needs the user's action")
    entry = await ledger.record_transaction(
        user_id,
        amount,
        CreditTransactionType.TOP_UP,
        key=charge.payment_intent,
        description="Auto top-up",
        metadata={"payment_intent": charge.payment_intent, "auto": True},
    )
    return entry.created


async def billing_portal_url(settings: Settings, user_id: uuid.UUID) -> str:
    gw = gateway(settings)
    return await gw.billing_portal(await ensure_customer(gw, user_id))


# ------------------------------------------------------------------ history


@dataclass(frozen=True)
class HistoryPage:
    transactions: list[CreditTransaction]
    next_transaction_time: datetime | None
    # (createdAt, id) of the last row: pages on without dropping rows that share a time.
    next_cursor: str | None


async def credit_history(
    user_id: uuid.UUID,
    *,
    before: datetime | None,
    type: CreditTransactionType | None,
    first: int,
    after: str | None = None,
) -> HistoryPage:
    """Active transactions, newest first. Page on with `after` (the last page's
    `next_cursor`), or with `before` (its `next_transaction_time`): transactions
    recorded since this change never share a time within one user's ledger."""
    if not 1 <= first <= MAX_HISTORY_PAGE:
        raise bad_input(f"first must be between 1 and {MAX_HISTORY_PAGE}")
    query = CreditTransaction.filter(user_id=user_id, is_active=True)
    if type is not None:
        query = query.filter(type=type)
    if before is not None:
        query = query.filter(created_at__lt=before)
    if after is not None:
        query = query.filter(rows_after(after))
    rows = await query.order_by("-created_at", "-id").limit(first + 1)
    more = len(rows) > first
    rows = rows[:first]
    if not (more and rows):
        return HistoryPage(rows, None, None)
    last = rows[-1]
    return HistoryPage(rows, last.created_at, encode_cursor(last.created_at, last.id))
