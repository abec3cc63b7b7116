"""Signed Stripe events of an odd shape (issue 13, item 8): an envelope we
cannot identify is refused with 400 JSON; a handled event whose object we
cannot use is 200 "ignored" (Stripe retrying it could not help). Never a
plain-text 500, and nothing in the ledger moves."""

from __future__ import annotations

import json

import pytest

from app.models import CreditTransaction, ProcessedStripeEvent
from tests.stripe_stand_in import event_payload
from tests.test_credits import post_event


def envelope(event_id, event_type="refund.created", obj=None) -> str:
    return json.dumps(
        {"id": event_id, "object": "event", "type": event_type, "data": {"object": obj or {}}}
    )


def refund(user, **fields) -> dict:
    return {
        "id": "re_shape",
        "object": "refund",
        "amount": 500,
        "metadata": {"user_id": str(user.id)},
        "status": "succeeded",
        **fields,
    }


REFUSED = {
    "5,000-character event id": lambda u: envelope("evt_" + "x" * 4996),
    "NUL in the event id": lambda u: envelope("evt_\u0000x"),
    "lone surrogate in the event id": lambda u: envelope("evt_\ud800"),
    "integer event id": lambda u: envelope(12345),
    "NUL in the type": lambda u: envelope("evt_nul_type", "refund.created\u0000"),
    "object is a list": lambda u: json.dumps(
        {"id": "evt_list_object", "type": "refund.created", "data": {"object": [1]}}
    ),
    "nested past the parser": lambda u: "[" * 100_000 + "]" * 100_000,
}

IGNORED = {
    "no object id": lambda u: {k: v for k, v in refund(u).items() if k != "id"},
    "NUL in the object id": lambda u: refund(u, id="re_\u0000"),
    "integer metadata.user_id": lambda u: refund(u, metadata={"user_id": 12345}),
    "metadata is a list": lambda u: refund(u, metadata=["user_id"]),
    "amount is text": lambda u: refund(u, amount="500"),
    "amount is a boolean": lambda u: refund(u, amount=True),
    "amount beyond any top-up": lambda u: refund(u, amount=10**30),
    "negative amount": lambda u: refund(u, amount=-500),
    "charge is an object without an id": lambda u: refund(u, metadata={}, charge={"x": 1}),
    "object id too long for our keys": lambda u: refund(u, id="re_" + "x" * 250),
}


async def ledger_of(user) -> list[tuple]:
    return await CreditTransaction.filter(user_id=user.id).values_list("key", "amount")


@pytest.mark.parametrize("case", list(REFUSED))
async def test_unidentifiable_signed_events_are_400_json(stripe_api, user, case):
    before = await ledger_of(user)
    events = await ProcessedStripeEvent.all().count()
    response = await post_event(stripe_api, REFUSED[case](user))
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"] == "BAD_USER_INPUT"
    assert await ledger_of(user) == before
    assert await ProcessedStripeEvent.all().count() == events


@pytest.mark.parametrize("case", list(IGNORED))
async def test_unusable_objects_are_200_ignored_once(stripe_api, user, case):
    before = await ledger_of(user)
    payload = event_payload("refund.created", IGNORED[case](user))
    response = await post_event(stripe_api, payload)
    assert response.status_code == 200, response.text
    assert response.json() == {"received": True, "outcome": "ignored"}
    assert await ledger_of(user) == before
    # Stored, so Stripe's next delivery of it is a duplicate.
    again = await post_event(stripe_api, payload)
    assert again.json()["outcome"] == "duplicate"


async def test_odd_checkout_sessions_credit_nothing(stripe_api, user):
    before = await ledger_of(user)
    for session in (
        {"id": "cs_shape_1", "payment_status": "paid", "metadata": {"user_id": 5, "credits": 500}},
        {"id": "cs_shape_2", "payment_status": "paid", "metadata": [1, 2], "payment_intent": 7},
        {"id": "cs_shape_3", "payment_status": "paid", "payment_intent": {"no": "id"}},
        {
            "id": "cs_shape_4",
            "payment_status": "paid",
            "metadata": {"kind": "top_up", "user_id": str(user.id), "credits": "lots"},
        },
    ):
        response = await post_event(
            stripe_api, event_payload("checkout.session.completed", session)
        )
        assert response.status_code == 200, response.text
    assert await ledger_of(user) == before


async def test_a_refund_whose_odd_metadata_is_dropped_still_counts_once(stripe_api, user):
    odd = refund(
        user, id="re_odd_key", metadata={"user_id": str(user.id), "transaction_key": "\u0000"}
    )
    for _ in range(2):
        response = await post_event(stripe_api, event_payload("refund.created", odd))
        assert response.status_code == 200 and response.json()["outcome"] == "applied"
    rows = [row for row in await ledger_of(user) if row[0] == "refund:re_odd_key"]
    assert rows == [("refund:re_odd_key", -500)]


async def test_stripe_unreachable_mid_event_is_a_json_error_to_retry(stripe_api, user):
    # The owner must be asked of Stripe (a charge it does not know): 502, JSON.
    payload = event_payload("refund.created", refund(user, metadata={}, charge="ch_unknown"))
    response = await post_event(stripe_api, payload)
    assert response.status_code == 502
    assert response.json()["error"] == "PAYMENT_PROVIDER_ERROR"
