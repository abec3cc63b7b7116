"""The credit ledger core on PostgreSQL: row-locked balance, exact running balances."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from app.errors import AppError, ErrorCode
from app.models import CreditTransaction, CreditTransactionType, UserBalance
from app.services import ledger

USAGE = CreditTransactionType.USAGE


async def _funded_user(new_user, gql, amount: int) -> uuid.UUID:
    person = new_user()
    await gql.ok("{ me { id } }", token=person.token)
    await ledger.record_transaction(
        person.id,
        amount - 250,
        CreditTransactionType.GRANT,
        f"fund:{person.id}",
        allow_negative=True,
    )
    assert await ledger.get_balance(person.id) == amount
    return person


async def test_fifty_concurrent_charges_are_exact(gql, new_user):
    person = await _funded_user(new_user, gql, 1000)
    await asyncio.gather(
        *(
            ledger.record_transaction(person.id, -7, USAGE, f"charge:{uuid.uuid4()}")
            for _ in range(50)
        )
    )
    assert await ledger.get_balance(person.id) == 1000 - 50 * 7
    usage = await CreditTransaction.filter(user_id=person.id, type=USAGE).order_by("created_at")
    assert len(usage) == 50
    # Serialised by the row lock: each running balance is the one before, minus 7.
    assert [t.running_balance for t in usage] == [1000 - 7 * (i + 1) for i in range(50)]
    me = await gql.ok("{ me { credits } }", token=person.token)
    assert me["me"]["credits"] == 650


async def test_concurrent_charges_never_overspend(gql, new_user):
    person = await _funded_user(new_user, gql, 100)
    results = await asyncio.gather(
        *(
            ledger.record_transaction(person.id, -3, USAGE, f"charge:{uuid.uuid4()}")
            for _ in range(50)
        ),
        return_exceptions=True,
    )
    refused = [r for r in results if isinstance(r, AppError)]
    assert all(r.code == ErrorCode.INSUFFICIENT_CREDITS for r in refused)
    assert len(refused) == 50 - 33
    assert await ledger.get_balance(person.id) == 1
    running = await CreditTransaction.filter(user_id=person.id, type=USAGE).values_list(
        "running_balance", flat=True
    )
    assert sorted(running, reverse=True) == [100 - 3 * (i + 1) for i in range(33)]


async def test_same_key_is_recorded_once_even_concurrently(gql, new_user):
    person = await _funded_user(new_user, gql, 500)
    key = f"node-run:{uuid.uuid4()}"
    entries = await asyncio.gather(
        *(ledger.record_transaction(person.id, -40, USAGE, key) for _ in range(20))
    )
    assert sum(entry.created for entry in entries) == 1
    assert len({entry.transaction.id for entry in entries}) == 1
    assert await ledger.get_balance(person.id) == 460


async def test_insufficient_charge_changes_nothing(gql, new_user):
    person = await _funded_user(new_user, gql, 10)
    with pytest.raises(AppError) as refused:
        await ledger.record_transaction(person.id, -11, USAGE, f"charge:{uuid.uuid4()}")
    assert refused.value.code == ErrorCode.INSUFFICIENT_CREDITS
    assert await ledger.get_balance(person.id) == 10
    assert await CreditTransaction.filter(user_id=person.id, type=USAGE).count() == 0


async def test_inactive_top_up_counts_only_once_activated(gql, new_user):
    person = await _funded_user(new_user, gql, 250)
    key = f"cs_test_{uuid.uuid4().hex}"
    await ledger.record_transaction(
        person.id, 1000, CreditTransactionType.TOP_UP, key, active=False
    )
    assert await ledger.get_balance(person.id) == 250
    activations = await asyncio.gather(*(ledger.activate_transaction(key) for _ in range(10)))
    assert sum(a.created for a in activations) == 1
    assert await ledger.get_balance(person.id) == 1250
    row = await CreditTransaction.get(key=key)
    assert row.is_active and row.running_balance == 1250
    assert await ledger.activate_transaction("cs_missing") is None
    assert await ledger.activate_transaction(key, user_id=uuid.uuid4()) is None


async def test_key_of_another_user_is_a_conflict(gql, new_user):
    alice = await _funded_user(new_user, gql, 300)
    bob = await _funded_user(new_user, gql, 300)
    key = f"grant:{uuid.uuid4()}"
    await ledger.record_transaction(alice.id, 5, CreditTransactionType.GRANT, key)
    with pytest.raises(AppError) as conflict:
        await ledger.record_transaction(bob.id, 5, CreditTransactionType.GRANT, key)
    assert conflict.value.code == ErrorCode.CONFLICT
    assert await ledger.get_balance(bob.id) == 300
    assert (await UserBalance.get(user_id=alice.id)).balance == 305
