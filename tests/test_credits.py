"""Credits through Stripe (SEMANTICS.md §8): top-ups, webhooks, refunds,
auto top-up and history, against the Stripe stand-in and PostgreSQL (refund
decisions: test_refunds.py; disputes: test_disputes.py)."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from app.models import CreditTransaction, ProcessedStripeEvent, RefundRequest
from tests.conftest import STRIPE_WEBHOOK_SECRET
from tests.graph_builders import create_graph, link, node
from tests.stripe_stand_in import event_payload, signed

CREDITS = "{ me { credits } }"
TOP_UP = "mutation($a: Int!) { requestTopUp(amount: $a) { checkoutUrl sessionId } }"
FULFILL = "mutation { fulfillCheckout { credits } }"
REFUND = """mutation($k: ID!, $r: String!) {
  refundTopUp(transactionKey: $k, reason: $r) {
    id transactionKey amount reason result status createdAt updatedAt } }"""
HISTORY = """query($before: DateTime, $type: CreditTransactionType, $first: Int!) {
  creditHistory(before: $before, type: $type, first: $first) {
    transactions { key type amount runningBalance createdAt description metadata
                   usageGraphId usageExecutionId usageNodeCount }
    nextTransactionTime } }"""
AUTO = """mutation($t: Int!, $a: Int!) {
  configureAutoTopUp(threshold: $t, amount: $a) { threshold amount } }"""


async def balance(gql, user) -> int:
    return (await gql.ok(CREDITS, token=user.token))["me"]["credits"]


async def ledger_rows(user) -> list[tuple]:
    return (
        await CreditTransaction.filter(user_id=user.id)
        .order_by("created_at")
        .values_list("key", "amount", "is_active", "running_balance")
    )


async def post_event(api, payload: str, headers: dict[str, str] | None = None) -> httpx.Response:
    # As patient as the GraphQL client: on a busy machine an answer can take seconds.
    async with httpx.AsyncClient(base_url=api.base_url, timeout=30) as client:
        return await client.post(
            "/api/stripe/webhook",
            content=payload,
            headers=headers if headers is not None else signed(payload, STRIPE_WEBHOOK_SECRET),
        )


async def paid_top_up(gql, api, stand_in, user, amount: int = 1000) -> str:
    """A top-up the user paid for and Stripe told us about; its session id."""
    session = (await gql.ok(TOP_UP, {"a": amount}, token=user.token))["requestTopUp"]
    paid = stand_in.pay(session["sessionId"])
    response = await post_event(api, event_payload("checkout.session.completed", paid))
    assert response.status_code == 200, response.text
    return session["sessionId"]


# ------------------------------------------------------------------ top-ups


async def test_top_ups_without_stripe_configured_are_a_payment_provider_error(gql, user):
    before = await ledger_rows(user)
    assert await gql.error_code(TOP_UP, {"a": 500}, token=user.token) == "PAYMENT_PROVIDER_ERROR"
    # The amount is checked first, whatever the configuration.
    assert await gql.error_code(TOP_UP, {"a": 499}, token=user.token) == "BAD_USER_INPUT"
    assert await ledger_rows(user) == before


async def test_request_top_up_opens_a_checkout_and_an_inactive_top_up(
    stripe_gql, user, stripe_stand_in
):
    start = await balance(stripe_gql, user)
    first = (await stripe_gql.ok(TOP_UP, {"a": 1500}, token=user.token))["requestTopUp"]
    second = (await stripe_gql.ok(TOP_UP, {"a": 700}, token=user.token))["requestTopUp"]
    assert first["checkoutUrl"].startswith("https://checkout.stripe.test/")
    session = stripe_stand_in.sessions[first["sessionId"]]
    assert session["amount_total"] == 1500
    assert session["metadata"]["user_id"] == str(user.id)
    # One Stripe customer for the user, made on first need and reused.
    customers = [c for c in stripe_stand_in.customers.values() if c["email"] == user.email]
    assert len(customers) == 1
    assert session["customer"] == customers[0]["id"]
    assert stripe_stand_in.sessions[second["sessionId"]]["customer"] == customers[0]["id"]
    # Nothing counts until it is paid.
    assert await balance(stripe_gql, user) == start
    rows = await CreditTransaction.filter(key__in=[first["sessionId"], second["sessionId"]])
    assert {(r.amount, r.is_active) for r in rows} == {(1500, False), (700, False)}
    history = await stripe_gql.ok(HISTORY, {"first": 100}, token=user.token)
    assert all(t["type"] != "TOP_UP" for t in history["creditHistory"]["transactions"])


@pytest.mark.parametrize("amount", [0, -500, 499, 1_000_001])
async def test_top_up_amount_out_of_range_changes_nothing(
    stripe_gql, user, stripe_stand_in, amount
):
    sessions_before = len(stripe_stand_in.sessions)
    before = await ledger_rows(user)
    code = await stripe_gql.error_code(TOP_UP, {"a": amount}, token=user.token)
    assert code == "BAD_USER_INPUT"
    assert await ledger_rows(user) == before
    assert len(stripe_stand_in.sessions) == sessions_before


async def test_webhook_credits_a_paid_checkout_exactly_once(
    stripe_gql, stripe_api, user, stripe_stand_in
):
    start = await balance(stripe_gql, user)
    session = (await stripe_gql.ok(TOP_UP, {"a": 1000}, token=user.token))["requestTopUp"]
    paid = stripe_stand_in.pay(session["sessionId"])
    payload = event_payload("checkout.session.completed", paid)
    response = await post_event(stripe_api, payload)
    assert response.status_code == 200
    assert response.json() == {"received": True, "outcome": "applied"}
    assert await balance(stripe_gql, user) == start + 1000
    # A replay, the same session under a new event id, and fulfillCheckout: no more credit.
    replay = await post_event(stripe_api, payload)
    assert replay.json()["outcome"] == "duplicate"
    await post_event(stripe_api, event_payload("checkout.session.completed", paid))
    await stripe_gql.ok(FULFILL, token=user.token)
    assert await balance(stripe_gql, user) == start + 1000
    top_up = await CreditTransaction.get(key=session["sessionId"])
    assert top_up.is_active and top_up.running_balance == start + 1000
    assert top_up.metadata["payment_intent"] == paid["payment_intent"]
    history = (await stripe_gql.ok(HISTORY, {"first": 1}, token=user.token))["creditHistory"]
    assert history["transactions"][0]["key"] == session["sessionId"]
    assert history["transactions"][0]["type"] == "TOP_UP"
    assert history["transactions"][0]["runningBalance"] == start + 1000


async def test_fulfill_checkout_credits_paid_sessions_without_a_webhook(
    stripe_gql, user, stripe_stand_in
):
    start = await balance(stripe_gql, user)
    paid = (await stripe_gql.ok(TOP_UP, {"a": 800}, token=user.token))["requestTopUp"]
    unpaid = (await stripe_gql.ok(TOP_UP, {"a": 900}, token=user.token))["requestTopUp"]
    stripe_stand_in.pay(paid["sessionId"])
    after = (await stripe_gql.ok(FULFILL, token=user.token))["fulfillCheckout"]["credits"]
    assert after == start + 800
    assert (await stripe_gql.ok(FULFILL, token=user.token))["fulfillCheckout"]["credits"] == after
    assert not (await CreditTransaction.get(key=unpaid["sessionId"])).is_active


async def test_a_completed_but_unpaid_checkout_waits_for_the_async_payment(
    stripe_gql, stripe_api, user, stripe_stand_in
):
    start = await balance(stripe_gql, user)
    session = (await stripe_gql.ok(TOP_UP, {"a": 600}, token=user.token))["requestTopUp"]
    pending = stripe_stand_in.pay(session["sessionId"], asynchronous=True)
    await post_event(stripe_api, event_payload("checkout.session.completed", pending))
    assert await balance(stripe_gql, user) == start
    settled = stripe_stand_in.settle(session["sessionId"])
    await post_event(stripe_api, event_payload("checkout.session.async_payment_succeeded", settled))
    assert await balance(stripe_gql, user) == start + 600


async def test_a_webhook_for_a_session_we_have_no_row_for_credits_its_owner(
    stripe_gql, stripe_api, user, stripe_stand_in
):
    # Stripe's webhook can overtake our own write of the inactive row.
    start = await balance(stripe_gql, user)
    session = stripe_stand_in._new_session(
        {
            "line_items": {"0": {"price_data": {"unit_amount": "650", "currency": "usd"}}},
            "metadata": {"user_id": str(user.id), "credits": "650", "kind": "top_up"},
        }
    )
    paid = stripe_stand_in.pay(session["id"])
    await post_event(stripe_api, event_payload("checkout.session.completed", paid))
    assert await balance(stripe_gql, user) == start + 650


async def test_twenty_concurrent_webhooks_and_fulfill_credit_one_top_up(
    stripe_gql, stripe_api, new_user, stripe_stand_in
):
    person = new_user()
    start = await balance(stripe_gql, person)
    session = (await stripe_gql.ok(TOP_UP, {"a": 2500}, token=person.token))["requestTopUp"]
    paid = stripe_stand_in.pay(session["sessionId"])
    same = event_payload("checkout.session.completed", paid)
    others = [event_payload("checkout.session.completed", paid) for _ in range(5)]
    results = await asyncio.gather(
        *[post_event(stripe_api, same) for _ in range(20)],
        *[post_event(stripe_api, other) for other in others],
        stripe_gql.execute(FULFILL, token=person.token),
        stripe_gql.execute(FULFILL, token=person.token),
    )
    assert all(r.status_code == 200 for r in results[:25])
    assert await balance(stripe_gql, person) == start + 2500
    top_ups = await CreditTransaction.filter(user_id=person.id, type="TOP_UP")
    assert [(t.amount, t.is_active) for t in top_ups] == [(2500, True)]
    assert top_ups[0].running_balance == start + 2500
    assert await ProcessedStripeEvent.filter(id=json.loads(same)["id"]).count() == 1


# ------------------------------------------------------------------ bad webhooks


async def test_bad_webhooks_are_refused_and_change_nothing(
    stripe_gql, stripe_api, user, stripe_stand_in
):
    session = (await stripe_gql.ok(TOP_UP, {"a": 500}, token=user.token))["requestTopUp"]
    paid = stripe_stand_in.pay(session["sessionId"])
    payload = event_payload("checkout.session.completed", paid)
    before = await ledger_rows(user)
    events_before = await ProcessedStripeEvent.all().count()
    cases = {
        "unsigned": {"Content-Type": "application/json"},
        "wrong secret": signed(payload, "whsec_someone_else"),
        "stale": signed(payload, STRIPE_WEBHOOK_SECRET, timestamp=1_600_000_000),
        "garbled signature": {"Stripe-Signature": "t=1,v1=abc"},
    }
    for name, headers in cases.items():
        response = await post_event(stripe_api, payload, headers)
        assert response.status_code == 400, name
        assert response.json()["error"] == "BAD_USER_INPUT", name
    for malformed in ("{not json", json.dumps({"id": "evt_x"}), json.dumps([1, 2])):
        response = await post_event(stripe_api, malformed)
        assert response.status_code == 400, malformed
    huge = json.dumps({"pad": "x" * 600_000})
    assert (await post_event(stripe_api, huge)).status_code == 400
    assert await ledger_rows(user) == before
    assert await ProcessedStripeEvent.all().count() == events_before
    # The genuine one still works afterwards.
    assert (await post_event(stripe_api, payload)).json()["outcome"] == "applied"


async def test_unknown_event_types_get_200_and_are_ignored(stripe_api, user):
    before = await ledger_rows(user)
    payload = event_payload("customer.created", {"id": "cus_x", "object": "customer"})
    response = await post_event(stripe_api, payload)
    assert response.status_code == 200
    assert response.json()["outcome"] == "ignored"
    assert await ledger_rows(user) == before


async def test_webhook_without_stripe_configured_is_refused(api):
    payload = event_payload("checkout.session.completed", {"id": "cs_x"})
    response = await post_event(api, payload)
    assert response.status_code == 502
    assert response.json()["error"] == "PAYMENT_PROVIDER_ERROR"


# ------------------------------------------------------------------ refunds


async def test_refund_of_an_unspent_top_up_is_approved_at_once(
    stripe_gql, stripe_api, user, stripe_stand_in
):
    key = await paid_top_up(stripe_gql, stripe_api, stripe_stand_in, user, 1200)
    before = await balance(stripe_gql, user)
    request = (await stripe_gql.ok(REFUND, {"k": key, "r": "changed my mind"}, token=user.token))[
        "refundTopUp"
    ]
    assert request["status"] == "APPROVED" and request["amount"] == 1200
    assert await balance(stripe_gql, user) == before - 1200
    [refund] = [
        r for r in stripe_stand_in.refunds.values() if r["metadata"].get("transaction_key") == key
    ]
    assert refund["amount"] == 1200
    assert refund["payment_intent"] == stripe_stand_in.sessions[key]["payment_intent"]
    # Stripe's refund.created for our own refund takes nothing more.
    await post_event(stripe_api, event_payload("refund.created", refund))
    assert await balance(stripe_gql, user) == before - 1200
    # Refunding twice: CONFLICT, nothing changes.
    rows = await ledger_rows(user)
    again = await stripe_gql.error_code(REFUND, {"k": key, "r": "again"}, token=user.token)
    assert again == "CONFLICT"
    assert await ledger_rows(user) == rows
    listed = await stripe_gql.ok("{ refundRequests { transactionKey status } }", token=user.token)
    assert {"transactionKey": key, "status": "APPROVED"} in listed["refundRequests"]


async def test_refund_bad_input_changes_nothing(
    stripe_gql, stripe_api, user, new_user, stripe_stand_in
):
    other = new_user()
    await stripe_gql.ok(CREDITS, token=other.token)
    others_key = await paid_top_up(stripe_gql, stripe_api, stripe_stand_in, other, 500)
    unpaid = (await stripe_gql.ok(TOP_UP, {"a": 500}, token=user.token))["requestTopUp"]
    grant = (await CreditTransaction.filter(user_id=user.id, type="GRANT").first()).key
    own = await paid_top_up(stripe_gql, stripe_api, stripe_stand_in, user, 500)
    rows, refunds = await ledger_rows(user), await RefundRequest.all().count()
    cases = [
        ({"k": others_key, "r": "mine?"}, "NOT_FOUND"),
        ({"k": "cs_does_not_exist", "r": "x"}, "NOT_FOUND"),
        ({"k": unpaid["sessionId"], "r": "x"}, "NOT_FOUND"),
        ({"k": grant, "r": "x"}, "NOT_FOUND"),
        ({"k": own, "r": "   "}, "BAD_USER_INPUT"),
        ({"k": own, "r": "x" * 2001}, "BAD_USER_INPUT"),
    ]
    for variables, code in cases:
        assert await stripe_gql.error_code(REFUND, variables, token=user.token) == code, variables
    assert await ledger_rows(user) == rows
    assert await RefundRequest.all().count() == refunds


# ------------------------------------------------------------------ auto top-up


async def test_auto_top_up_rules(stripe_gql, gql, user):
    before = await stripe_gql.ok("{ autoTopUp { threshold amount } }", token=user.token)
    assert before["autoTopUp"] == {"threshold": 0, "amount": 0}
    bad = [(-1, 0), (100, 499), (2000, 1000), (0, -5), (0, 1_000_001)]
    for threshold, amount in bad:
        code = await stripe_gql.error_code(AUTO, {"t": threshold, "a": amount}, token=user.token)
        assert code == "BAD_USER_INPUT", (threshold, amount)
    assert (await stripe_gql.ok("{ autoTopUp { threshold amount } }", token=user.token)) == before
    # Off needs no payment provider; on does.
    off = await gql.ok(AUTO, {"t": 100, "a": 0}, token=user.token)
    assert off["configureAutoTopUp"] == {"threshold": 100, "amount": 0}
    assert (
        await gql.error_code(AUTO, {"t": 0, "a": 500}, token=user.token) == "PAYMENT_PROVIDER_ERROR"
    )
    assert (await gql.ok("{ autoTopUp { threshold amount } }", token=user.token))["autoTopUp"] == {
        "threshold": 100,
        "amount": 0,
    }


async def test_configuring_below_the_threshold_charges_the_saved_card_now(
    stripe_gql, stripe_api, new_user, stripe_stand_in
):
    person = new_user()
    await stripe_gql.ok(CREDITS, token=person.token)
    await paid_top_up(stripe_gql, stripe_api, stripe_stand_in, person, 500)
    start = await balance(stripe_gql, person)
    result = await stripe_gql.ok(AUTO, {"t": start + 100, "a": 2000}, token=person.token)
    assert result["configureAutoTopUp"] == {"threshold": start + 100, "amount": 2000}
    assert await balance(stripe_gql, person) == start + 2000
    [charge] = [
        c
        for c in stripe_stand_in.calls("payment_intents")
        if c.params.get("metadata", {}).get("user_id") == str(person.id)
    ]
    assert charge.params["off_session"] == "true" and charge.params["amount"] == "2000"
    # A declined card: the error says so, neither rule nor balance change.
    customer = (await _user_row(person)).stripe_customer_id
    stripe_stand_in.declining.add(customer)
    try:
        code = await stripe_gql.error_code(AUTO, {"t": start + 5000, "a": 6000}, token=person.token)
    finally:
        stripe_stand_in.declining.discard(customer)
    assert code == "PAYMENT_PROVIDER_ERROR"
    assert await balance(stripe_gql, person) == start + 2000
    config = await stripe_gql.ok("{ autoTopUp { threshold amount } }", token=person.token)
    assert config["autoTopUp"] == {"threshold": start + 100, "amount": 2000}


async def _user_row(person):
    from app.models import User

    return await User.get(id=person.id)


async def test_a_run_that_crosses_the_threshold_tops_up_through_the_worker(
    stripe_gql, stripe_api, stripe_worker, new_user, stripe_stand_in
):
    person = new_user()
    await stripe_gql.ok(CREDITS, token=person.token)
    await paid_top_up(stripe_gql, stripe_api, stripe_stand_in, person, 500)
    start = await balance(stripe_gql, person)
    await stripe_gql.ok(AUTO, {"t": start, "a": 1000}, token=person.token)
    graph = await create_graph(
        stripe_gql,
        person,
        {
            "name": "costs one credit",
            "nodes": [
                node("in", "AgentInput", name="x", type="string"),
                node("wait", "Wait", seconds=0),
                node("out", "AgentOutput", name="y"),
            ],
            "links": [
                link("in", "result", "wait", "input"),
                link("wait", "output", "out", "value"),
            ],
        },
    )
    run = await stripe_gql.ok(
        'mutation($g: ID!) { executeGraph(graphId: $g, inputs: {x: "a"}) { id } }',
        {"g": graph["id"]},
        token=person.token,
    )
    assert run["executeGraph"]["id"]
    deadline = asyncio.get_running_loop().time() + 30
    while await balance(stripe_gql, person) != start - 1 + 1000:
        assert asyncio.get_running_loop().time() < deadline, await ledger_rows(person)
        await asyncio.sleep(0.1)
    autos = await CreditTransaction.filter(
        user_id=person.id, type="TOP_UP", description="Auto top-up"
    )
    assert [t.amount for t in autos] == [1000]


# ------------------------------------------------------------------ portal, history, keys


async def test_manage_payment_method_gives_a_billing_portal_for_the_users_customer(
    stripe_gql, user, stripe_stand_in
):
    url = (await stripe_gql.ok("mutation { managePaymentMethod }", token=user.token))[
        "managePaymentMethod"
    ]
    assert url.startswith("https://billing.stripe.test/session/")
    customer = (await _user_row(user)).stripe_customer_id
    [call] = [
        c
        for c in stripe_stand_in.calls("billing_portal/sessions")
        if c.params["customer"] == customer
    ]
    assert call.params["return_url"].startswith("https://app.example.test/")


async def test_credit_history_pages_newest_first_and_filters(
    stripe_gql, stripe_api, new_user, stripe_stand_in
):
    person = new_user()
    await stripe_gql.ok(CREDITS, token=person.token)
    for amount in (500, 600, 700):
        await paid_top_up(stripe_gql, stripe_api, stripe_stand_in, person, amount)
    everything = (await stripe_gql.ok(HISTORY, {"first": 1000}, token=person.token))[
        "creditHistory"
    ]
    assert everything["nextTransactionTime"] is None
    assert [t["amount"] for t in everything["transactions"]] == [700, 600, 500, 250]
    assert [t["runningBalance"] for t in everything["transactions"]] == [2050, 1350, 750, 250]
    seen, before = [], None
    while True:
        page = (await stripe_gql.ok(HISTORY, {"first": 1, "before": before}, token=person.token))[
            "creditHistory"
        ]
        seen += [t["key"] for t in page["transactions"]]
        before = page["nextTransactionTime"]
        if before is None:
            break
    assert seen == [t["key"] for t in everything["transactions"]]
    top_ups = await stripe_gql.ok(HISTORY, {"first": 10, "type": "TOP_UP"}, token=person.token)
    assert [t["amount"] for t in top_ups["creditHistory"]["transactions"]] == [700, 600, 500]
    for first in (0, 1001, -1):
        code = await stripe_gql.error_code(HISTORY, {"first": first}, token=person.token)
        assert code == "BAD_USER_INPUT"


async def test_api_keys_cannot_touch_credits(stripe_gql, user):
    key = (
        await stripe_gql.ok(
            'mutation { createApiKey(input: {name: "k", permissions: [READ_GRAPH, EXECUTE_GRAPH, '
            "EXECUTE_BLOCK, READ_BLOCK, READ_EXECUTION, MANAGE_SCHEDULES]}) { plainTextKey } }",
            token=user.token,
        )
    )["createApiKey"]["plainTextKey"]
    operations = [
        ("{ creditHistory { nextTransactionTime } }", None),
        ("{ refundRequests { id } }", None),
        ("{ autoTopUp { amount } }", None),
        (TOP_UP, {"a": 500}),
        (FULFILL, None),
        (AUTO, {"t": 0, "a": 0}),
        ("mutation { managePaymentMethod }", None),
    ]
    for query, variables in operations:
        assert await stripe_gql.error_code(query, variables, api_key=key) == "FORBIDDEN", query
    for query, variables in operations:
        assert await stripe_gql.error_code(query, variables) == "UNAUTHENTICATED", query


PAGE = """query($first: Int!, $after: String) {
  creditHistory(first: $first, after: $after) {
    transactions { key createdAt } nextTransactionTime nextCursor } }"""


async def test_credit_history_pages_keep_transactions_that_share_a_time(gql, user):
    """Paging by time alone (`before`) dropped every row that shared the boundary
    createdAt; `nextCursor` also names the last row, so none is lost."""
    import uuid

    from app.clock import utcnow

    moment = utcnow()
    keys = [f"same-time-{i}-{uuid.uuid4().hex[:6]}" for i in range(7)]
    for key in keys:  # rows as older ledgers hold them: one time for several
        await CreditTransaction.create(
            id=uuid.uuid4(),
            key=key,
            user_id=user.id,
            type="GRANT",
            amount=1,
            running_balance=0,
            created_at=moment,
        )
    seen, after = [], None
    while True:
        page = (await gql.ok(PAGE, {"first": 2, "after": after}, token=user.token))["creditHistory"]
        seen += [t["key"] for t in page["transactions"]]
        after = page["nextCursor"]
        if after is None:
            break
        assert page["nextTransactionTime"] == page["transactions"][-1]["createdAt"]
    assert len(seen) == len(set(seen))
    assert set(keys) <= set(seen)
    everything = (await gql.ok(PAGE, {"first": 1000}, token=user.token))["creditHistory"]
    assert seen == [t["key"] for t in everything["transactions"]]
    error = await gql.error(PAGE, {"first": 2, "after": "not a cursor"}, token=user.token)
    assert error["extensions"]["code"] == "BAD_USER_INPUT"


async def test_ledger_transactions_of_one_user_never_share_a_time(gql, user):
    """So `before`/`nextTransactionTime` paging loses nothing for what the ledger
    records, even when many charges land at once."""
    from app.models import CreditTransactionType
    from app.services import ledger

    await asyncio.gather(
        *(
            ledger.record_transaction(
                user.id, 1, CreditTransactionType.GRANT, f"burst-{user.id}-{i}"
            )
            for i in range(30)
        )
    )
    times = await CreditTransaction.filter(user_id=user.id).values_list("created_at", flat=True)
    assert len(times) == len(set(times))
    seen, before = [], None
    while True:
        page = (await gql.ok(HISTORY, {"first": 7, "before": before}, token=user.token))[
            "creditHistory"
        ]
        seen += [t["key"] for t in page["transactions"]]
        before = page["nextTransactionTime"]
        if before is None:
            break
    assert len(seen) == len(times) == len(set(seen))


async def test_a_retried_auto_top_up_keeps_its_stripe_idempotency_key(
    stripe_gql, stripe_api, new_user, stripe_stand_in, stripe_env
):
    """The job's first try charged the card, then failed before crediting it; new
    usage landed before the retry. The retry used to ask Stripe with a new key
    (made from the latest ledger row) and charge the card a second time."""
    import uuid

    from tortoise import connections

    from app.models import CreditTransactionType
    from app.services import ledger
    from app.settings import Settings
    from workers.jobs.auto_top_up import auto_top_up

    person = new_user()
    await stripe_gql.ok(CREDITS, token=person.token)
    await paid_top_up(stripe_gql, stripe_api, stripe_stand_in, person, 500)
    start = await balance(stripe_gql, person)
    await stripe_gql.ok(AUTO, {"t": start, "a": 1000}, token=person.token)
    crossing = await ledger.record_transaction(
        person.id, -5, CreditTransactionType.USAGE, f"crossing-{uuid.uuid4().hex}"
    )
    name = f"fail_top_up_{uuid.uuid4().hex[:8]}"
    db = connections.get("default")
    await db.execute_script(
        f"""
        CREATE SEQUENCE {name};
        CREATE FUNCTION {name}() RETURNS trigger AS $$
        BEGIN
          IF NEW.user_id = '{person.id}' AND NEW.type = 'TOP_UP' AND nextval('{name}') = 1 THEN
            RAISE EXCEPTION 'the worker died after charging the card';
          END IF;
          RETURN NEW;
        END $$ LANGUAGE plpgsql;
        CREATE TRIGGER {name} BEFORE INSERT ON credit_transactions
          FOR EACH ROW EXECUTE FUNCTION {name}();
        """
    )
    settings = Settings(**{k: v for k, v in stripe_env.items() if k in Settings.model_fields})
    ctx = {"settings": settings}
    cause = crossing.transaction.key
    try:
        with pytest.raises(Exception, match="died after charging"):
            await auto_top_up(ctx, str(person.id), cause)
        # More usage lands before arq runs the job again.
        await ledger.record_transaction(
            person.id, -1, CreditTransactionType.USAGE, f"between-{uuid.uuid4().hex}"
        )
        assert await auto_top_up(ctx, str(person.id), cause) == "credited"
    finally:
        await db.execute_script(
            f"DROP TRIGGER {name} ON credit_transactions; DROP FUNCTION {name}(); "
            f"DROP SEQUENCE {name};"
        )
    intents = {
        c.params["metadata"]["user_id"]: c
        for c in stripe_stand_in.calls("payment_intents")
        if c.params.get("metadata", {}).get("kind") == "auto"
    }
    charges = [
        intent
        for intent in stripe_stand_in.intents.values()
        if intent.get("metadata", {}).get("user_id") == str(person.id)
        and intent.get("metadata", {}).get("kind") == "auto"
    ]
    assert str(person.id) in intents
    assert len(charges) == 1, charges
    autos = await CreditTransaction.filter(user_id=person.id, description="Auto top-up")
    assert [t.amount for t in autos] == [1000]
