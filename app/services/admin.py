"""Admin tools for credits: find users with their balances, adjust a balance by
hand, read a user's history, and the audit log every admin operation writes.

Callers are admins (schema.permissions.AdminOnly checks the JWT role before
anything here runs); each operation records who did what to whom, in the same
database transaction as its change.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tortoise.expressions import Q
from tortoise.transactions import in_transaction

from app.clock import utcnow
from app.errors import bad_input, not_found
from app.models import (
    AdminAction,
    AdminAuditEntry,
    CreditTransaction,
    CreditTransactionType,
    RefundRequest,
    RefundRequestStatus,
    User,
    UserBalance,
)
from app.principal import Principal
from app.services import credits, ledger
from app.services.pagination import check_page_size, encode_cursor, rows_after

MAX_USERS_PAGE = 100
MAX_AUDIT_PAGE = 100
MAX_REQUESTS_PAGE = 100
MAX_SEARCH_LENGTH = 320
MAX_REASON_LENGTH = 2000


async def record_audit(
    admin: Principal,
    action: AdminAction,
    *,
    target_user_id: uuid.UUID | None = None,
    details: dict[str, Any] | None = None,
    using_db: Any = None,
) -> AdminAuditEntry:
    return await AdminAuditEntry.create(
        id=uuid.uuid4(),
        admin_id=admin.user_id,
        admin_email=admin.email[:320],
        action=action,
        target_user_id=target_user_id,
        details=details,
        created_at=utcnow(),
        using_db=using_db,
    )


def parse_user_id(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


def check_reason(reason: str) -> str:
    reason = reason.strip()
    if not reason:
        raise bad_input("reason must not be empty", field="reason")
    if len(reason) > MAX_REASON_LENGTH:
        raise bad_input(f"reason must be at most {MAX_REASON_LENGTH} characters", field="reason")
    return reason


def _after(query, after: str | None):
    """Newest first, strictly after the cursor's (created_at, id)."""
    if not after:
        return query
    return query.filter(rows_after(after))


@dataclass(frozen=True)
class Page:
    rows: list[Any]
    total: int
    has_next: bool

    def cursor(self, row: Any) -> str:
        return encode_cursor(row.created_at, row.id)


# ------------------------------------------------------------------ users


@dataclass(frozen=True)
class UserPage(Page):
    balances: dict[uuid.UUID, int]


async def list_users(
    admin: Principal, search: str | None, first: int, after: str | None
) -> UserPage:
    """Users newest first; `search` matches an email (any part, any case) or an exact id."""
    check_page_size(first, MAX_USERS_PAGE)
    base = User.all()
    search = (search or "").strip()
    if len(search) > MAX_SEARCH_LENGTH:
        raise bad_input(f"search must be at most {MAX_SEARCH_LENGTH} characters", field="search")
    if search:
        as_id = parse_user_id(search)
        base = base.filter(
            Q(email__icontains=search) | Q(id=as_id) if as_id else Q(email__icontains=search)
        )
    rows = await _after(base, after).order_by("-created_at", "-id").limit(first + 1)
    page_rows = rows[:first]
    balances = dict(
        await UserBalance.filter(user_id__in=[r.id for r in page_rows]).values_list(
            "user_id", "balance"
        )
    )
    await record_audit(admin, AdminAction.LIST_USERS, details={"search": search or None})
    return UserPage(page_rows, await base.count(), len(rows) > first, balances)


async def credit_history(
    admin: Principal,
    user_id: str,
    *,
    before: datetime | None,
    type: CreditTransactionType | None,
    first: int,
) -> credits.HistoryPage:
    target = parse_user_id(user_id)
    if target is None or not await User.exists(id=target):
        raise not_found("User")
    page = await credits.credit_history(target, before=before, type=type, first=first)
    await record_audit(admin, AdminAction.VIEW_CREDIT_HISTORY, target_user_id=target)
    return page


async def adjust_credits(
    admin: Principal, user_id: str, amount: int, reason: str
) -> CreditTransaction:
    """A ledger row of its own type, carrying the admin and the reason. Taking
    credits away may not go below zero (INSUFFICIENT_CREDITS)."""
    reason = check_reason(reason)
    if amount == 0:
        raise bad_input("amount must not be 0", field="amount")
    if abs(amount) > credits.MAX_TOP_UP:
        raise bad_input(f"amount must be within ±{credits.MAX_TOP_UP}", field="amount")
    target = parse_user_id(user_id)
    if target is None or not await User.exists(id=target):
        raise not_found("User")
    async with in_transaction() as conn:
        entry = await ledger.record_transaction(
            target,
            amount,
            CreditTransactionType.ADMIN_ADJUSTMENT,
            key=f"admin-adjustment:{uuid.uuid4()}",
            description=reason,
            metadata={"adminId": str(admin.user_id), "adminEmail": admin.email, "reason": reason},
        )
        await record_audit(
            admin,
            AdminAction.ADJUST_CREDITS,
            target_user_id=target,
            details={
                "amount": amount,
                "reason": reason,
                "transactionKey": entry.transaction.key,
                "balance": entry.transaction.running_balance,
            },
            using_db=conn,
        )
    return entry.transaction


# ------------------------------------------------------------------ refund requests


async def list_refund_requests(
    admin: Principal, status: RefundRequestStatus | None, first: int, after: str | None
) -> Page:
    """Every user's requests, oldest first (the queue an admin works through)."""
    check_page_size(first, MAX_REQUESTS_PAGE)
    base = RefundRequest.all() if status is None else RefundRequest.filter(status=status)
    query = base
    if after:
        query = query.filter(rows_after(after, ascending=True))
    rows = await query.order_by("created_at", "id").limit(first + 1)
    await record_audit(
        admin, AdminAction.LIST_REFUND_REQUESTS, details={"status": status and str(status)}
    )
    return Page(rows[:first], await base.count(), len(rows) > first)


# ------------------------------------------------------------------ audit log


async def audit_log(
    admin: Principal,
    *,
    first: int,
    after: str | None,
    action: AdminAction | None,
    admin_id: str | None,
    target_user_id: str | None,
) -> Page:
    check_page_size(first, MAX_AUDIT_PAGE)
    base = AdminAuditEntry.all()
    if action is not None:
        base = base.filter(action=action)
    for field, value in (("admin_id", admin_id), ("target_user_id", target_user_id)):
        if value is not None:
            parsed = parse_user_id(value)
            if parsed is None:
                return Page([], 0, False)
            base = base.filter(**{field: parsed})
    rows = await _after(base, after).order_by("-created_at", "-id").limit(first + 1)
    page = Page(rows[:first], await base.count(), len(rows) > first)
    await record_audit(admin, AdminAction.VIEW_AUDIT_LOG)
    return page
