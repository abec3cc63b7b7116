"""Refunds as the seed decides them (issue 17): at once when the user spent
little of the top-up, else an admin approves (through Stripe, keyed) or
rejects; `refund.created`, ours or from Stripe's dashboard, marks the request
APPROVED once; the ledger changes once whatever the order. Against the Stripe
stand-in with signed webhooks."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from app.clock import utcnow
from app.models import CreditTransaction, RefundRequest
from tests.conftest import STRIPE_WEBHOOK_SECRET
from tests.notification_helpers import wait_for_notifications
from tests.stripe_stand_in import event_payload
from tests.test_credits import balance, paid_top_up, post_event

ADJUST = """mutation($u: ID!, $a: Int!, $r: String!) {
  adminAdjustCredits(userId: $u, amount: $a, reason: $r) { runningBalance } }"""
REQUEST_FIELDS = "id userId transactionKey amount reason result status decidedAt"
LIST = f"""query($s: RefundRequestStatus, $first: Int!, $after: String) {{
  adminRefundRequests(status: $s, first: $first, after: $after) {{
    totalCount pageInfo {{ hasNextPage endCursor }} edges {{ node {{ {REQUEST_FIELDS} }} }} }} }}"""
APPROVE = f"""mutation($id: ID!, $a: Int) {{
  approveRefundRequest(id: $id, amount: $a) {{ {REQUEST_FIELDS} }} }}"""
REJECT = f"""mutation($id: ID!, $r: String!) {{
  rejectRefundRequest(id: $id, reason: $r) {{ {REQUEST_FIELDS} }} }}"""
REFUND = f"""mutation($k: ID!, $r: String!) {{
  refundTopUp(transactionKey: $k, reason: $r) {{ {REQUEST_FIELDS} }} }}"""
AUDIT = """query($action: AdminAction, $target: ID) {
  adminAuditLog(action: $action, targetUserId: $target, first: 100) {
    edges { node { adminId adminEmail action targetUserId details createdAt } } } }"""


@pytest.fixture
async def admin(new_user, stripe_gql):
    someone = new_user(admin=True)
    await stripe_gql.ok("{ me { id } }", token=someone.token)
    return someone


@pytest.fixture
async def person(new_user, stripe_gql):
    someone = new_user()
    await stripe_gql.ok("{ me { id } }", token=someone.token)
    return someone


async def refund_rows(user) -> list[int]:
    return await CreditTransaction.filter(user_id=user.id, type="REFUND").values_list(
        "amount", flat=True
    )


def refunds_of(stand_in, top_up_key: str) -> list[dict]:
    intent = stand_in.sessions[top_up_key]["payment_intent"]
    return [r for r in stand_in.refunds.values() if r["payment_intent"] == intent]


async def pending_request(gql, api, stand_in, person, admin) -> tuple[str, dict]:
    """A 1000-credit top-up of which the user spent 800: 1000 - 450 > 500, so it waits."""
    key = await paid_top_up(gql, api, stand_in, person, 1000)
    await gql.ok(ADJUST, {"u": str(person.id), "a": -800, "r": "spent"}, token=admin.token)
    assert await balance(gql, person) == 450
    request = (await gql.ok(REFUND, {"k": key, "r": "please"}, token=person.token))["refundTopUp"]
    assert request["status"] == "PENDING"
    return key, request


# ------------------------------------------------------------------ the user asks


async def test_a_top_up_mostly_unspent_is_refunded_at_once_and_once(
    stripe_gql, stripe_api, stripe_worker, stripe_stand_in, smtp_server, person, admin
):
    key = await paid_top_up(stripe_gql, stripe_api, stripe_stand_in, person, 1000)
    # 250 + 1000 - 300 = 950; 1000 - 950 = 50 is within the 500 tolerance.
    await stripe_gql.ok(ADJUST, {"u": str(person.id), "a": -300, "r": "x"}, token=admin.token)
    request = (await stripe_gql.ok(REFUND, {"k": key, "r": "unused"}, token=person.token))[
        "refundTopUp"
    ]
    assert request["status"] == "APPROVED" and request["amount"] == 1000
    assert request["userId"] == str(person.id) and request["decidedAt"]
    # The whole top-up goes back; the 50 credits spent of it leave the balance below zero.
    assert await balance(stripe_gql, person) == -50
    [refund] = refunds_of(stripe_stand_in, key)
    assert refund["amount"] == 1000 and refund["metadata"]["refund_request"] == request["id"]
    [call] = [
        c for c in stripe_stand_in.calls("refunds") if c.params["metadata"] == refund["metadata"]
    ]
    assert call.idempotency_key == f"refund-request-{request['id']}"
    # Stripe tells us about our own refund: nothing more changes.
    await post_event(stripe_api, event_payload("refund.created", refund))
    assert await refund_rows(person) == [-1000]
    [note] = await wait_for_notifications(stripe_gql, person, 1, type="REFUND_PROCESSED")
    assert note["title"] == "Your refund of 1000 credits was approved"
    [mail] = await smtp_server.wait_for(person.email, 1)
    assert mail["Subject"] == note["title"]


async def test_a_mostly_spent_top_up_waits_for_an_admin(
    stripe_gql, stripe_api, stripe_stand_in, person, admin
):
    key, request = await pending_request(stripe_gql, stripe_api, stripe_stand_in, person, admin)
    assert refunds_of(stripe_stand_in, key) == []
    assert await balance(stripe_gql, person) == 450
    listed = (await stripe_gql.ok(LIST, {"s": "PENDING", "first": 100}, token=admin.token))[
        "adminRefundRequests"
    ]
    [mine] = [e["node"] for e in listed["edges"] if e["node"]["id"] == request["id"]]
    assert mine["userId"] == str(person.id) and mine["transactionKey"] == key
    assert mine["decidedAt"] is None
    approved = (await stripe_gql.ok(LIST, {"s": "APPROVED", "first": 100}, token=admin.token))[
        "adminRefundRequests"
    ]
    assert request["id"] not in [e["node"]["id"] for e in approved["edges"]]


async def test_one_refund_request_a_week(stripe_gql, stripe_api, stripe_stand_in, person):
    first = await paid_top_up(stripe_gql, stripe_api, stripe_stand_in, person, 500)
    second = await paid_top_up(stripe_gql, stripe_api, stripe_stand_in, person, 500)
    done = (await stripe_gql.ok(REFUND, {"k": first, "r": "a"}, token=person.token))["refundTopUp"]
    before = (await balance(stripe_gql, person), len(stripe_stand_in.refunds))
    error = await stripe_gql.error(REFUND, {"k": second, "r": "b"}, token=person.token)
    assert error["extensions"]["code"] == "RATE_LIMITED"
    assert error["extensions"]["retryAt"]
    assert (await balance(stripe_gql, person), len(stripe_stand_in.refunds)) == before
    assert not await RefundRequest.exists(transaction_key=second)
    # A week later (what the clock does to the first request), the second may go.
    await RefundRequest.filter(id=done["id"]).update(created_at=utcnow() - timedelta(days=8))
    again = (await stripe_gql.ok(REFUND, {"k": second, "r": "b"}, token=person.token))[
        "refundTopUp"
    ]
    assert again["status"] == "APPROVED"


async def test_two_requests_at_once_pass_the_weekly_limit_once(
    stripe_gql, stripe_api, stripe_stand_in, person
):
    keys = [await paid_top_up(stripe_gql, stripe_api, stripe_stand_in, person, 500) for _ in "ab"]
    bodies = await asyncio.gather(
        *(stripe_gql.execute(REFUND, {"k": k, "r": "x"}, token=person.token) for k in keys)
    )
    codes = sorted(
        b["errors"][0]["extensions"]["code"] if b.get("errors") else "OK" for b in bodies
    )
    assert codes == ["OK", "RATE_LIMITED"]
    assert await RefundRequest.filter(user_id=person.id).count() == 1
    assert await refund_rows(person) == [-500]


# ------------------------------------------------------------------ admins decide


async def test_an_admin_approves_through_stripe_and_the_ledger_changes_once(
    stripe_gql, stripe_api, stripe_stand_in, person, admin
):
    key, request = await pending_request(stripe_gql, stripe_api, stripe_stand_in, person, admin)
    approved = (await stripe_gql.ok(APPROVE, {"id": request["id"]}, token=admin.token))[
        "approveRefundRequest"
    ]
    assert approved["status"] == "APPROVED" and approved["amount"] == 1000
    assert approved["decidedAt"] and approved["result"].startswith("Approved; refunded")
    [refund] = refunds_of(stripe_stand_in, key)
    [call] = [
        c for c in stripe_stand_in.calls("refunds") if c.params["metadata"] == refund["metadata"]
    ]
    assert call.idempotency_key == f"refund-request-{request['id']}"
    assert await balance(stripe_gql, person) == 450 - 1000
    await post_event(stripe_api, event_payload("refund.created", refund))
    await post_event(stripe_api, event_payload("refund.created", refund))
    assert await refund_rows(person) == [-1000]
    for query, variables in (
        (APPROVE, {"id": request["id"]}),
        (REJECT, {"id": request["id"], "r": "no"}),
    ):
        assert await stripe_gql.error_code(query, variables, token=admin.token) == "CONFLICT"
    assert await refund_rows(person) == [-1000]
    [note] = await wait_for_notifications(stripe_gql, person, 1, type="REFUND_PROCESSED")
    assert note["data"]["refundRequestId"] == request["id"]
    audit = (
        await stripe_gql.ok(
            AUDIT, {"action": "APPROVE_REFUND", "target": str(person.id)}, token=admin.token
        )
    )["adminAuditLog"]["edges"]
    [entry] = [e["node"] for e in audit]
    assert entry["adminId"] == str(admin.id) and entry["adminEmail"] == admin.email
    assert entry["details"] == {
        "refundRequestId": request["id"],
        "amount": 1000,
        "refund": refund["id"],
    }


async def test_a_partial_approval_refunds_that_much(
    stripe_gql, stripe_api, stripe_stand_in, person, admin
):
    key, request = await pending_request(stripe_gql, stripe_api, stripe_stand_in, person, admin)
    for amount in (0, -1, 1001):
        code = await stripe_gql.error_code(
            APPROVE, {"id": request["id"], "a": amount}, token=admin.token
        )
        assert code == "BAD_USER_INPUT", amount
    assert refunds_of(stripe_stand_in, key) == []
    approved = (await stripe_gql.ok(APPROVE, {"id": request["id"], "a": 400}, token=admin.token))[
        "approveRefundRequest"
    ]
    assert approved["amount"] == 400
    assert [r["amount"] for r in refunds_of(stripe_stand_in, key)] == [400]
    assert await refund_rows(person) == [-400]
    assert await balance(stripe_gql, person) == 50


async def test_an_admin_rejects_with_a_reason(
    stripe_gql, stripe_api, stripe_stand_in, person, admin
):
    key, request = await pending_request(stripe_gql, stripe_api, stripe_stand_in, person, admin)
    for variables, code in (
        ({"id": request["id"], "r": "  "}, "BAD_USER_INPUT"),
        ({"id": "00000000-0000-0000-0000-000000000000", "r": "x"}, "NOT_FOUND"),
        ({"id": "not-an-id", "r": "x"}, "NOT_FOUND"),
    ):
        assert await stripe_gql.error_code(REJECT, variables, token=admin.token) == code
    rejected = (
        await stripe_gql.ok(REJECT, {"id": request["id"], "r": "used for runs"}, token=admin.token)
    )["rejectRefundRequest"]
    assert rejected["status"] == "REJECTED" and rejected["result"] == "used for runs"
    assert await stripe_gql.error_code(APPROVE, {"id": request["id"]}, token=admin.token) == (
        "CONFLICT"
    )
    assert refunds_of(stripe_stand_in, key) == [] and await refund_rows(person) == []
    mine = await stripe_gql.ok("{ refundRequests { id status result } }", token=person.token)
    assert {"id": request["id"], "status": "REJECTED", "result": "used for runs"} in mine[
        "refundRequests"
    ]
    [note] = await wait_for_notifications(stripe_gql, person, 1, type="REFUND_PROCESSED")
    assert note["title"] == "Your refund request was declined"
    assert "used for runs" in note["body"]


async def test_a_dashboard_refund_approves_the_pending_request_once(
    stripe_gql, stripe_api, stripe_stand_in, person, admin
):
    key, request = await pending_request(stripe_gql, stripe_api, stripe_stand_in, person, admin)
    intent = stripe_stand_in.sessions[key]["payment_intent"]
    refund = stripe_stand_in.dashboard_refund(intent, 1000)
    assert refund["metadata"] == {}
    payload = event_payload("refund.created", refund)
    for body in (payload, payload, event_payload("refund.created", refund)):
        assert (await post_event(stripe_api, body)).status_code == 200
    assert await refund_rows(person) == [-1000]
    row = await RefundRequest.get(id=request["id"])
    assert row.status == "APPROVED" and row.refund_id == refund["id"]
    assert row.decided_by is None
    assert await stripe_gql.error_code(APPROVE, {"id": request["id"]}, token=admin.token) == (
        "CONFLICT"
    )
    notes = await wait_for_notifications(stripe_gql, person, 1, type="REFUND_PROCESSED")
    assert len(notes) == 1


async def test_concurrent_decisions_refund_at_most_once(
    stripe_gql, stripe_api, stripe_stand_in, person, admin
):
    key, request = await pending_request(stripe_gql, stripe_api, stripe_stand_in, person, admin)
    calls = [
        stripe_gql.execute(APPROVE, {"id": request["id"]}, token=admin.token) for _ in range(3)
    ]
    calls.append(stripe_gql.execute(REJECT, {"id": request["id"], "r": "no"}, token=admin.token))
    bodies = await asyncio.gather(*calls)
    winners = [b for b in bodies if not b.get("errors")]
    assert len(winners) == 1
    assert all(
        b["errors"][0]["extensions"]["code"] == "CONFLICT" for b in bodies if b.get("errors")
    )
    status = next(iter(winners[0]["data"].values()))["status"]
    refunded = refunds_of(stripe_stand_in, key)
    assert len(refunded) == (1 if status == "APPROVED" else 0)
    assert await refund_rows(person) == ([-1000] if status == "APPROVED" else [])


async def test_stripes_own_events_racing_our_answers_change_the_ledger_once(
    stripe_gql, stripe_api, stripe_stand_in, admin, new_user
):
    """The stand-in sends refund.created itself, in the background, as soon as
    it makes a refund: the event races the mutation that asked for it."""
    people = []
    for _ in range(3):
        quick, slow = new_user(), new_user()
        for someone in (quick, slow):
            await stripe_gql.ok("{ me { id } }", token=someone.token)
        quick_key = await paid_top_up(stripe_gql, stripe_api, stripe_stand_in, quick, 500)
        _, pending = await pending_request(stripe_gql, stripe_api, stripe_stand_in, slow, admin)
        people.append((quick, quick_key, slow, pending))
    deliveries = len(stripe_stand_in.deliveries)
    with stripe_stand_in.sending_events_to(
        f"{stripe_api.base_url}/api/stripe/webhook", STRIPE_WEBHOOK_SECRET
    ):
        for quick, quick_key, _, pending in people:
            auto = (await stripe_gql.ok(REFUND, {"k": quick_key, "r": "x"}, token=quick.token))[
                "refundTopUp"
            ]
            assert auto["status"] == "APPROVED"
            approved = (await stripe_gql.ok(APPROVE, {"id": pending["id"]}, token=admin.token))[
                "approveRefundRequest"
            ]
            assert approved["status"] == "APPROVED"
    assert stripe_stand_in.deliveries[deliveries:] == [200] * 6
    for quick, _, slow, pending in people:
        assert await refund_rows(quick) == [-500]
        assert await refund_rows(slow) == [-1000]
        for someone in (quick, slow):
            notes = await wait_for_notifications(stripe_gql, someone, 1, type="REFUND_PROCESSED")
            assert len(notes) == 1
        row = await RefundRequest.get(id=pending["id"])
        assert row.decided_by == admin.id


async def test_a_dashboard_refund_after_a_rejection_still_counts_once(
    stripe_gql, stripe_api, stripe_stand_in, person, admin
):
    """Money that left through Stripe's dashboard left, whatever was decided here."""
    key, request = await pending_request(stripe_gql, stripe_api, stripe_stand_in, person, admin)
    await stripe_gql.ok(REJECT, {"id": request["id"], "r": "no"}, token=admin.token)
    refund = stripe_stand_in.dashboard_refund(stripe_stand_in.sessions[key]["payment_intent"], 300)
    await post_event(stripe_api, event_payload("refund.created", refund))
    await post_event(stripe_api, event_payload("refund.created", refund))
    assert await refund_rows(person) == [-300]
    row = await RefundRequest.get(id=request["id"])
    assert row.status == "APPROVED" and row.amount == 300
    notes = await wait_for_notifications(stripe_gql, person, 2, type="REFUND_PROCESSED")
    assert sorted(n["title"] for n in notes) == [
        "Your refund of 300 credits was approved",
        "Your refund request was declined",
    ]
