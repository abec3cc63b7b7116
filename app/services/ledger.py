"""The credit ledger core: append-only transactions, balance under a row lock.

Every balance change runs in one database transaction that first locks the
user's `user_balances` row (SELECT ... FOR UPDATE on PostgreSQL), so concurrent
charges are serialised per user: none overspends and no update is lost. A
transaction key is unique, so repeating an operation with the same key (a
retried job, a replayed webhook) finds the row already there and changes
nothing. Transactions run through `app.transactions.atomic`, so a cancelled
caller (a stopped run) never leaves one open.

Post-paid costs (SEMANTICS.md §7): a run with an after-run cost first reserves
its minimum (`reserve`); what can be spent is balance - reserved. Its real cost
is charged later with `release_reservation` set to the same key, in the same
transaction that drops the hold. So concurrent runs can take a balance below
zero only by what each used beyond its reserved minimum.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from app.clock import utcnow
from app.errors import AppError, ErrorCode
from app.models import CreditReservation, CreditTransaction, CreditTransactionType, UserBalance
from app.transactions import atomic

# Consecutive transactions of one user are at least this far apart in created_at,
# so paging by time never meets two with the same time.
_TICK = timedelta(microseconds=1)
# Keys in one `IN (...)`: far below the 32,767 parameters a statement may carry.
_KEYS_PER_STATEMENT = 1000


@dataclass(frozen=True)
class LedgerEntry:
    transaction: CreditTransaction
    # False when the key already existed and nothing was changed.
    created: bool


async def get_balance(user_id: uuid.UUID) -> int:
    row = await UserBalance.get_or_none(user_id=user_id).only("balance")
    return row.balance if row else 0


async def get_available(user_id: uuid.UUID) -> int:
    """What the user can spend now: the balance less what runs in flight hold."""
    row = await UserBalance.get_or_none(user_id=user_id).only("balance", "reserved")
    return row.balance - row.reserved if row else 0


async def _locked_balance(user_id: uuid.UUID, conn) -> UserBalance:
    row = await UserBalance.select_for_update().using_db(conn).get_or_none(user_id=user_id)
    if row is None:
        # Users get their balance row when they are created; this covers rows
        # made before that rule, inside the same transaction.
        await UserBalance.create(user_id=user_id, balance=0, using_db=conn)
        row = await UserBalance.select_for_update().using_db(conn).get(user_id=user_id)
    return row


def _next_time(balance: UserBalance) -> datetime:
    """Now, or just after the user's latest transaction if the clock has not moved on."""
    now = utcnow()
    latest = balance.updated_at
    return max(now, latest + _TICK) if latest is not None else now


async def _release_many(conn, user_id: uuid.UUID, keys: list[str]) -> int:
    """Drops these holds (inside the caller's locked transaction); what they held."""
    held = 0
    for start in range(0, len(keys), _KEYS_PER_STATEMENT):
        chunk = keys[start : start + _KEYS_PER_STATEMENT]
        holds = CreditReservation.filter(key__in=chunk, user_id=user_id).using_db(conn)
        held += sum(await holds.values_list("amount", flat=True))
        await holds.delete()
    return held


async def record_transaction(
    user_id: uuid.UUID,
    amount: int,
    type: CreditTransactionType,
    key: str,
    *,
    active: bool = True,
    allow_negative: bool = False,
    release_reservation: str | None = None,
    description: str | None = None,
    metadata: dict[str, Any] | None = None,
    usage_graph_id: uuid.UUID | None = None,
    usage_execution_id: uuid.UUID | None = None,
    usage_node_count: int | None = None,
) -> LedgerEntry:
    """Append one transaction; a negative amount that the available balance
    cannot cover raises INSUFFICIENT_CREDITS unless `allow_negative` (after-run
    costs, disputes, refunds). `release_reservation` drops that hold first."""

    async def work(conn) -> LedgerEntry:
        balance = await _locked_balance(user_id, conn)
        released = (
            await _release_many(conn, user_id, [release_reservation]) if release_reservation else 0
        )
        reserved = balance.reserved - released
        existing = await CreditTransaction.filter(key=key).using_db(conn).first()
        if existing is not None:
            if existing.user_id != user_id:  # type: ignore[attr-defined]
                raise AppError(ErrorCode.CONFLICT, "Transaction key already used")
            if released:
                await UserBalance.filter(user_id=user_id).using_db(conn).update(reserved=reserved)
            return LedgerEntry(existing, created=False)
        new_balance = balance.balance + amount
        if active and amount < 0 and new_balance - reserved < 0 and not allow_negative:
            raise AppError(
                ErrorCode.INSUFFICIENT_CREDITS,
                "Insufficient credits",
                balance=balance.balance - reserved,
                required=-amount,
            )
        created_at = _next_time(balance) if active else utcnow()
        transaction = await CreditTransaction.create(
            id=uuid.uuid4(),
            key=key,
            user_id=user_id,
            type=type,
            amount=amount,
            running_balance=new_balance if active else None,
            is_active=active,
            created_at=created_at,
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
                .update(balance=new_balance, reserved=reserved, updated_at=created_at)
            )
        elif released:
            await UserBalance.filter(user_id=user_id).using_db(conn).update(reserved=reserved)
        return LedgerEntry(transaction, created=True)

    return await atomic(work)


async def reserve(
    user_id: uuid.UUID, key: str, amount: int, execution_id: uuid.UUID | None = None
) -> None:
    """Hold `amount` of the available balance under `key` (the key its real
    charge will use), or INSUFFICIENT_CREDITS. Holding the same key twice, or a
    key already charged, holds nothing more."""
    if amount <= 0:
        return

    async def work(conn) -> None:
        balance = await _locked_balance(user_id, conn)
        if await CreditReservation.filter(key=key).using_db(conn).exists():
            return
        if await CreditTransaction.filter(key=key).using_db(conn).exists():
            return
        available = balance.balance - balance.reserved
        if available < amount:
            raise AppError(
                ErrorCode.INSUFFICIENT_CREDITS,
                "Insufficient credits",
                balance=available,
                required=amount,
            )
        await CreditReservation.create(
            key=key,
            user_id=user_id,
            amount=amount,
            execution_id=execution_id,
            created_at=utcnow(),
            using_db=conn,
        )
        await (
            UserBalance.filter(user_id=user_id)
            .using_db(conn)
            .update(reserved=balance.reserved + amount)
        )

    await atomic(work)


async def release(user_id: uuid.UUID, key: str) -> int:
    """Drop one hold without charging; returns what it held."""
    return await release_many(user_id, [key])


async def release_many(user_id: uuid.UUID, keys: list[str]) -> int:
    """Drop these holds of one user without charging, together; what they held."""

    async def work(conn) -> int:
        balance = await _locked_balance(user_id, conn)
        released = await _release_many(conn, user_id, keys)
        if released:
            await (
                UserBalance.filter(user_id=user_id)
                .using_db(conn)
                .update(reserved=balance.reserved - released)
            )
        return released

    return await atomic(work)


async def release_execution_reservations(execution_ids: list[uuid.UUID]) -> int:
    """Drop every hold these executions still have (their end: nothing of them
    runs on), in one transaction per user."""
    held = await CreditReservation.filter(execution_id__in=execution_ids).values_list(
        "user_id", "key"
    )
    by_user: dict[uuid.UUID, list[str]] = {}
    for user_id, key in held:
        by_user.setdefault(user_id, []).append(key)
    return sum([await release_many(user_id, keys) for user_id, keys in by_user.items()])


@dataclass(frozen=True)
class RunTimeCharge:
    """A stopped node's after-run cost (0: only its hold is dropped); its key is
    the key of its reservation too."""

    key: str
    amount: int
    description: str
    graph_id: uuid.UUID
    execution_id: uuid.UUID


async def record_run_time_charges(
    user_id: uuid.UUID, charges: list[RunTimeCharge]
) -> tuple[dict[str, int], int | None]:
    """Many after-run costs of one user in one transaction (a stop of a large run
    ends hundreds of nodes at once): each drops its hold and is charged once by its
    key, allowed below zero like record_transaction(allow_negative=True). Returns
    what each key was charged (an existing key: what it was charged before) and the
    new balance, or None when nothing new was charged."""

    async def work(conn) -> tuple[dict[str, int], int | None]:
        balance = await _locked_balance(user_id, conn)
        keys = [charge.key for charge in charges]
        released = await _release_many(conn, user_id, keys)
        charged: dict[str, int] = {}
        for start in range(0, len(keys), _KEYS_PER_STATEMENT):
            chunk = keys[start : start + _KEYS_PER_STATEMENT]
            existing = CreditTransaction.filter(key__in=chunk, user_id=user_id).using_db(conn)
            charged.update(
                (key, -amount) for key, amount in await existing.values_list("key", "amount")
            )
        new_balance, created_at, rows = balance.balance, _next_time(balance), []
        for charge in charges:
            if charge.key in charged or charge.amount == 0:
                charged.setdefault(charge.key, 0)
                continue
            new_balance -= charge.amount
            charged[charge.key] = charge.amount
            rows.append(
                CreditTransaction(
                    id=uuid.uuid4(),
                    key=charge.key,
                    user_id=user_id,
                    type=CreditTransactionType.USAGE,
                    amount=-charge.amount,
                    running_balance=new_balance,
                    is_active=True,
                    created_at=created_at,
                    description=charge.description,
                    usage_graph_id=charge.graph_id,
                    usage_execution_id=charge.execution_id,
                )
            )
            created_at += _TICK
        if rows:
            await CreditTransaction.bulk_create(rows, using_db=conn)
        if rows or released:
            await (
                UserBalance.filter(user_id=user_id)
                .using_db(conn)
                .update(
                    balance=new_balance,
                    reserved=balance.reserved - released,
                    updated_at=created_at - _TICK if rows else balance.updated_at,
                )
            )
        return charged, (new_balance if rows else None)

    return await atomic(work)


async def release_stale_reservations(older_than: datetime) -> int:
    """Holds whose run can no longer be going on (a worker that died and never
    came back for it); the sweep drops them."""
    held = await CreditReservation.filter(created_at__lt=older_than).values_list("user_id", "key")
    return sum([await release(user_id, key) for user_id, key in held])


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

    async def work(conn) -> LedgerEntry:
        balance = await _locked_balance(owner, conn)
        transaction = await CreditTransaction.filter(key=key).using_db(conn).get()
        if transaction.is_active:
            return LedgerEntry(transaction, created=False)
        new_balance = balance.balance + transaction.amount
        now = _next_time(balance)
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

    return await atomic(work)
