"""Refunds of top-ups, as the seed decides them.

- A user asks (`refundTopUp`): at most REFUND_REQUESTS_PER_WEEK requests in any
  seven days, one per top-up. When the top-up's amount minus the balance is at
  most REFUND_AUTO_THRESHOLD (the user spent little of it), it is refunded
  through Stripe at once; otherwise it waits, PENDING, for an admin.
- An admin approves (refunding through Stripe, keyed by the request so a retry
  never refunds twice) or rejects with a reason.
- Stripe's `refund.created`, for our refunds and for those made in Stripe's
  dashboard, takes the credits back once per refund id and marks the
  matching request APPROVED.

The ledger is keyed by the Stripe refund id and a request moves to APPROVED by
a conditional update, so every path in any order changes the ledger once and
decides the request once (and tells the user once).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import timedelta

from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from app.clock import utcnow
from app.errors import AppError, ErrorCode, bad_input, not_found
from app.models import (
    AdminAction,
    CreditTransaction,
    CreditTransactionType,
    NotificationType,
    RefundRequest,
    RefundRequestStatus,
    UserBalance,
)
from app.principal import Principal
from app.services import credits, ledger
from app.services.admin import check_reason, parse_user_id, record_audit
from app.services.notifications import NewNotification, Notifier
from app.settings import Settings

log = logging.getLogger(__name__)

REQUEST_WINDOW = timedelta(days=7)


def _conflict(message: str) -> AppError:
    return AppError(ErrorCode.CONFLICT, message)


def payment_intent_of(top_up: CreditTransaction) -> str | None:
    return (top_up.metadata or {}).get("payment_intent")


# ------------------------------------------------------------------ the user asks


async def refund_top_up(
    settings: Settings, notifier: Notifier, user_id: uuid.UUID, transaction_key: str, reason: str
) -> RefundRequest:
    """Shielded: a client that goes away cannot stop it between Stripe's refund
    and its record (refund.created would still record it, but later)."""
    return await asyncio.shield(
        _refund_top_up(settings, notifier, user_id, transaction_key, reason)
    )


async def _refund_top_up(
    settings: Settings, notifier: Notifier, user_id: uuid.UUID, transaction_key: str, reason: str
) -> RefundRequest:
    reason = check_reason(reason)
    top_up = await CreditTransaction.get_or_none(
        key=transaction_key, user_id=user_id, type=CreditTransactionType.TOP_UP, is_active=True
    )
    if top_up is None:
        raise not_found("Transaction")
    if await RefundRequest.exists(transaction_key=transaction_key):
        raise _conflict("A refund was already requested for this top-up")
    try:
        async with in_transaction() as conn:
            # The balance row serialises this user's requests, so two at once
            # cannot both pass the weekly limit.
            await UserBalance.select_for_update().using_db(conn).get_or_none(user_id=user_id)
            await _check_weekly_limit(settings, user_id, conn)
            request = await RefundRequest.create(
                id=uuid.uuid4(),
                user_id=user_id,
                transaction_key=transaction_key,
                amount=top_up.amount,
                reason=reason,
                status=RefundRequestStatus.PENDING,
                using_db=conn,
            )
    except IntegrityError as error:  # a second refund of the same top-up, at once
        raise _conflict("A refund was already requested for this top-up") from error
    payment_intent = payment_intent_of(top_up)
    balance = await ledger.get_balance(user_id)
    if payment_intent is None or top_up.amount - balance > settings.REFUND_AUTO_THRESHOLD:
        return request  # for an admin to decide
    try:
        refund_id = await credits.gateway(settings).refund(
            payment_intent=payment_intent,
            amount=top_up.amount,
            metadata=_refund_metadata(request),
            idempotency_key=f"refund-request-{request.id}",
        )
    except AppError:
        # Nothing happened at Stripe: forget the request so the user may retry.
        await request.delete()
        raise
    await _refunded(
        notifier,
        request,
        refund_id,
        top_up.amount,
        result=f"Refunded automatically through Stripe ({refund_id})",
    )
    await request.refresh_from_db()
    return request


async def _check_weekly_limit(settings: Settings, user_id: uuid.UUID, conn) -> None:
    since = utcnow() - REQUEST_WINDOW
    recent = (
        await RefundRequest.filter(user_id=user_id, created_at__gte=since)
        .using_db(conn)
        .order_by("created_at")
        .values_list("created_at", flat=True)
    )
    limit = settings.REFUND_REQUESTS_PER_WEEK
    if len(recent) >= limit:
        retry_at = recent[len(recent) - limit] + REQUEST_WINDOW
        raise AppError(
            ErrorCode.RATE_LIMITED,
            f"At most {limit} refund request(s) a week; try again after {retry_at.isoformat()}",
            retryAt=retry_at.isoformat(),
        )


def _refund_metadata(request: RefundRequest) -> dict[str, str]:
    return {
        "user_id": str(request.user_id),  # type: ignore[attr-defined]
        "transaction_key": request.transaction_key,
        "refund_request": str(request.id),
    }


async def _refunded(
    notifier: Notifier,
    request: RefundRequest,
    refund_id: str,
    amount: int,
    *,
    result: str,
    decided_by: uuid.UUID | None = None,
) -> None:
    """Money left through Stripe for this request: take the credits back (once
    per refund id) and mark the request APPROVED (once)."""
    user_id = request.user_id  # type: ignore[attr-defined]
    await credits.record_refund(user_id, refund_id, amount, "Refund of a top-up")
    await mark_approved(notifier, request.id, user_id, refund_id, amount, result, decided_by)


async def mark_approved(
    notifier: Notifier,
    request_id: uuid.UUID,
    user_id: uuid.UUID,
    refund_id: str,
    amount: int,
    result: str,
    decided_by: uuid.UUID | None = None,
) -> bool:
    changed = (
        await RefundRequest.filter(id=request_id)
        .exclude(status=RefundRequestStatus.APPROVED)
        .update(
            status=RefundRequestStatus.APPROVED,
            refund_id=refund_id,
            amount=amount,
            result=result,
            decided_by=decided_by,
            decided_at=utcnow(),
            updated_at=utcnow(),
        )
    )
    if changed:
        await _notify_decided(notifier, request_id, user_id, RefundRequestStatus.APPROVED, amount)
    return bool(changed)


async def _notify_decided(
    notifier: Notifier,
    request_id: uuid.UUID,
    user_id: uuid.UUID,
    status: RefundRequestStatus,
    amount: int,
    reason: str | None = None,
) -> None:
    if status == RefundRequestStatus.APPROVED:
        title = f"Your refund of {amount} credits was approved"
        body = f"{amount} credits (${amount / 100:.2f}) are on their way back to your card."
    else:
        title = "Your refund request was declined"
        body = f"Your refund request of {amount} credits was declined: {reason}"
    await notifier.notify(
        user_id,
        NewNotification(
            type=NotificationType.REFUND_PROCESSED,
            key=f"refund-decided:{request_id}:{status}",
            title=title,
            body=body,
            data={"refundRequestId": str(request_id), "status": str(status), "amount": amount},
        ),
    )


# ------------------------------------------------------------------ Stripe says


async def refund_created(
    notifier: Notifier,
    owner: uuid.UUID,
    refund_id: str,
    amount: int,
    transaction_key: str | None,
    payment_intent: str | None,
) -> None:
    """`refund.created`: ours or made in Stripe's dashboard."""
    await credits.record_refund(owner, refund_id, amount, "Refunded through Stripe")
    request = await _request_for(owner, transaction_key, payment_intent)
    if request is not None:
        await mark_approved(
            notifier, request.id, owner, refund_id, amount, f"Refunded through Stripe ({refund_id})"
        )


async def _request_for(
    owner: uuid.UUID, transaction_key: str | None, payment_intent: str | None
) -> RefundRequest | None:
    if transaction_key:
        found = await RefundRequest.get_or_none(user_id=owner, transaction_key=transaction_key)
        if found is not None:
            return found
    if not payment_intent:
        return None
    # A dashboard refund names only the payment: find the top-up it paid for.
    top_up = await top_up_paid_by(owner, payment_intent)
    if top_up is None:
        return None
    return await RefundRequest.get_or_none(user_id=owner, transaction_key=top_up.key)


async def top_up_paid_by(owner: uuid.UUID, payment_intent: str) -> CreditTransaction | None:
    """The user's top-up that this Stripe payment paid for (a user has few)."""
    for top_up in await CreditTransaction.filter(
        user_id=owner, type=CreditTransactionType.TOP_UP
    ).order_by("-created_at"):
        if top_up.key == payment_intent or payment_intent_of(top_up) == payment_intent:
            return top_up
    return None


# ------------------------------------------------------------------ admins decide


async def approve_request(
    settings: Settings,
    notifier: Notifier,
    admin: Principal,
    request_id: str,
    amount: int | None,
) -> RefundRequest:
    """Refund through Stripe (all of the top-up, or `amount` of it). The
    request's row stays locked from the check to the decision, so a concurrent
    approve or reject waits and then finds it decided (CONFLICT). Shielded: a
    client that goes away cannot leave Stripe's refund half-recorded."""
    parsed = parse_user_id(request_id)
    if parsed is None:
        raise not_found("Refund request")
    return await asyncio.shield(_approve(settings, notifier, admin, parsed, amount))


async def _approve(
    settings: Settings,
    notifier: Notifier,
    admin: Principal,
    request_id: uuid.UUID,
    amount: int | None,
) -> RefundRequest:
    async with in_transaction() as conn:
        request = await RefundRequest.select_for_update().using_db(conn).get_or_none(id=request_id)
        if request is None:
            raise not_found("Refund request")
        if request.status != RefundRequestStatus.PENDING:
            raise _conflict(f"The request is already {request.status}")
        amount = request.amount if amount is None else amount
        if not 1 <= amount <= request.amount:
            raise bad_input(f"amount must be between 1 and {request.amount}", field="amount")
        top_up = await CreditTransaction.get_or_none(key=request.transaction_key).using_db(conn)
        payment_intent = payment_intent_of(top_up) if top_up else None
        if payment_intent is None:
            raise _conflict("This top-up has no Stripe payment to refund")
        refund_id = await credits.gateway(settings).refund(
            payment_intent=payment_intent,
            amount=amount,
            metadata=_refund_metadata(request),
            idempotency_key=f"refund-request-{request.id}",
        )
        now = utcnow()
        # Decided inside the lock: whoever waits for it finds it APPROVED, and so
        # does Stripe's refund.created for this refund.
        await (
            RefundRequest.filter(id=request_id)
            .using_db(conn)
            .update(
                status=RefundRequestStatus.APPROVED,
                refund_id=refund_id,
                amount=amount,
                result=f"Approved; refunded through Stripe ({refund_id})",
                decided_by=admin.user_id,
                decided_at=now,
                updated_at=now,
            )
        )
        await record_audit(
            admin,
            AdminAction.APPROVE_REFUND,
            target_user_id=request.user_id,  # type: ignore[attr-defined]
            details={"refundRequestId": str(request.id), "amount": amount, "refund": refund_id},
            using_db=conn,
        )
    user_id = request.user_id  # type: ignore[attr-defined]
    await credits.record_refund(user_id, refund_id, amount, "Refund of a top-up")
    await _notify_decided(notifier, request.id, user_id, RefundRequestStatus.APPROVED, amount)
    await request.refresh_from_db()
    return request


async def reject_request(
    notifier: Notifier, admin: Principal, request_id: str, reason: str
) -> RefundRequest:
    reason = check_reason(reason)
    parsed = parse_user_id(request_id)
    if parsed is None:
        raise not_found("Refund request")
    async with in_transaction() as conn:
        request = await RefundRequest.select_for_update().using_db(conn).get_or_none(id=parsed)
        if request is None:
            raise not_found("Refund request")
        if request.status != RefundRequestStatus.PENDING:
            raise _conflict(f"The request is already {request.status}")
        now = utcnow()
        await (
            RefundRequest.filter(id=parsed)
            .using_db(conn)
            .update(
                status=RefundRequestStatus.REJECTED,
                result=reason,
                decided_by=admin.user_id,
                decided_at=now,
                updated_at=now,
            )
        )
        await record_audit(
            admin,
            AdminAction.REJECT_REFUND,
            target_user_id=request.user_id,  # type: ignore[attr-defined]
            details={"refundRequestId": str(parsed), "reason": reason},
            using_db=conn,
        )
    await request.refresh_from_db()
    await _notify_decided(
        notifier,
        request.id,
        request.user_id,  # type: ignore[attr-defined]
        RefundRequestStatus.REJECTED,
        request.amount,
        reason,
    )
    return request


async def user_requests(user_id: uuid.UUID) -> list[RefundRequest]:
    return await RefundRequest.filter(user_id=user_id).order_by("-created_at", "-id")
