"""The credit ledger core: append-only transactions, balance under a row lock.

Every balance change runs in one database transaction that first locks the
user's `user_balances` row (SELECT ... FOR UPDATE on PostgreSQL), so concurrent
charges are serialised per user: none overspends and no update is lost. A
transaction key is unique, so repeating an operation with the same key (a
retried job, a replayed webhook) finds the row already there and changes
nothing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from tortoise.transactions import in_transaction

from app.clock import utcnow
from app.errors import AppError, ErrorCode
from app.models import CreditTransaction, CreditTransactionType, UserBalance


@dataclass(frozen=True)
class LedgerEntry:
    transaction: CreditTransaction
    # False when the key already existed and nothing was changed.
    created: bool


async def get_balance(user_id: uuid.UUID) -> int:
    row = await UserBalance.get_or_none(user_id=user_id).only("balance")
    return row.balance if row else 0


async def _locked_balance(user_id: uuid.UUID, conn) -> UserBalance:
    row = await UserBalance.select_for_update().using_db(conn).get_or_none(user_id=user_id)
    if row is None:
        # Users get their balance row when they are created; this covers rows
        # made before that rule, inside the same transaction.
        await UserBalance.create(user_id=user_id, balance=0, using_db=conn)
        row = await UserBalance.select_for_update().using_db(conn).get(user_id=user_id)
    return row


async def record_transaction(
    user_id: uuid.UUID,
    amount: int,
    type: CreditTransactionType,
    key: str,
    *,
    active: bool = True,
    allow_negative: bool = False,
    description: str | None = None,
    metadata: dict[str, Any] | None = None,
    usage_graph_id: uuid.UUID | None = None,
    usage_execution_id: uuid.UUID | None = None,
    usage_node_count: int | None = None,
) -> LedgerEntry:
    """Append one transaction; a negative amount that the balance cannot cover
    raises INSUFFICIENT_CREDITS unless `allow_negative` (disputes, refunds)."""
    async with in_transaction() as conn:
        balance = await _locked_balance(user_id, conn)
        existing = await CreditTransaction.filter(key=key).using_db(conn).first()
        if existing is not None:
            if existing.user_id != user_id:  # type: ignore[attr-defined]
                raise AppError(ErrorCode.CONFLICT, "Transaction key already used")
            return LedgerEntry(existing, created=False)
        new_balance = balance.balance + amount
        if active and amount < 0 and new_balance < 0 and not allow_negative:
            raise AppError(
                ErrorCode.INSUFFICIENT_CREDITS,
                "Insufficient credits",
                balance=balance.balance,
                required=-amount,
            )
        transaction = await CreditTransaction.create(
            id=uuid.uuid4(),
            key=key,
            user_id=user_id,
            type=type,
            amount=amount,
            running_balance=new_balance if active else None,
            is_active=active,
            created_at=utcnow(),
            description=description,
            metadata=metadata,
            usage_graph_id=usage_graph_id,
            usage_execution_id=usage_execution_id,
            usage_node_count=usage_node_count,
            using_db=conn,
        )
        if active:
            await (
                UserBalance.filter(user_id=user_id)
                .using_db(conn)
                .update(balance=new_balance, updated_at=utcnow())
            )
        return LedgerEntry(transaction, created=True)


async def activate_transaction(
    key: str, user_id: uuid.UUID | None = None, metadata: dict[str, Any] | None = None
) -> LedgerEntry | None:
    """Make an inactive transaction count (a paid checkout), adding `metadata` to
    the row's. Idempotent; None when no such key (or it belongs to someone other
    than `user_id`)."""
    found = await CreditTransaction.filter(key=key).only("user_id").first()
    if found is None or (user_id is not None and found.user_id != user_id):  # type: ignore[attr-defined]
        return None
    owner = found.user_id  # type: ignore[attr-defined]
    async with in_transaction() as conn:
        balance = await _locked_balance(owner, conn)
        transaction = await CreditTransaction.filter(key=key).using_db(conn).get()
        if transaction.is_active:
            return LedgerEntry(transaction, created=False)
        new_balance = balance.balance + transaction.amount
        now = utcnow()
        merged = {**(transaction.metadata or {}), **(metadata or {})}
        # The activation time becomes the row's time, so the latest active
        # transaction still carries the balance.
        await (
            CreditTransaction.filter(id=transaction.id)
            .using_db(conn)
            .update(is_active=True, running_balance=new_balance, created_at=now, metadata=merged)
        )
        await (
            UserBalance.filter(user_id=owner)
            .using_db(conn)
            .update(balance=new_balance, updated_at=now)
        )
        transaction.is_active = True
        transaction.running_balance = new_balance
        transaction.created_at = now
        transaction.metadata = merged
        return LedgerEntry(transaction, created=True)
