"""Admin credit tools (issue 17): users with balances, adjustments as their own
ledger rows, a user's history, and the audit log of everything admins do.
Admins are JWTs with role admin; nobody else, and no API key, gets in."""

from __future__ import annotations

import pytest

from app.models import AdminAuditEntry, CreditTransaction
from tests.harness import graphql_ws
from tests.test_api_keys import create_key

USERS = """query($search: String, $first: Int!, $after: String) {
  adminUsers(search: $search, first: $first, after: $after) {
    totalCount pageInfo { hasNextPage endCursor }
    edges { node { id email credits createdAt } } } }"""
ADJUST = """mutation($u: ID!, $a: Int!, $r: String!) {
  adminAdjustCredits(userId: $u, amount: $a, reason: $r) {
    key type amount runningBalance description metadata } }"""
HISTORY = """query($u: ID!, $type: CreditTransactionType) {
  adminCreditHistory(userId: $u, type: $type, first: 100) {
    transactions { key type amount runningBalance description } } }"""
AUDIT = """query($action: AdminAction, $admin: ID, $target: ID, $first: Int!, $after: String) {
  adminAuditLog(action: $action, adminId: $admin, targetUserId: $target, first: $first,
                after: $after) {
    totalCount pageInfo { hasNextPage endCursor }
    edges { node { id adminId adminEmail action targetUserId details createdAt } } } }"""
REQUESTS = "{ adminRefundRequests(first: 5) { totalCount } }"
APPROVE = 'mutation { approveRefundRequest(id: "00000000-0000-0000-0000-000000000000") { id } }'
REJECT = (
    'mutation { rejectRefundRequest(id: "00000000-0000-0000-0000-000000000000", reason: "x")'
    " { id } }"
)
CREDITS = "{ me { credits } }"


@pytest.fixture
async def admin(new_user, gql):
    someone = new_user(admin=True)
    await gql.ok("{ me { id } }", token=someone.token)
    return someone


def every_admin_operation(target: str) -> list[tuple[str, dict]]:
    return [
        (USERS, {"first": 5}),
        (HISTORY, {"u": target}),
        (AUDIT, {"first": 5}),
        (REQUESTS, {}),
        (ADJUST, {"u": target, "a": 1000, "r": "free money"}),
        (APPROVE, {}),
        (REJECT, {}),
    ]


async def test_admin_operations_are_refused_to_everyone_else(gql, api, user, admin):
    before = await gql.ok(CREDITS, token=user.token)
    audit_before = await AdminAuditEntry.all().count()
    # An API key of a user, and one made by an admin: keys never reach admin operations.
    keys = [
        (await create_key(gql, who, ["READ_GRAPH", "EXECUTE_GRAPH", "READ_EXECUTION"]))[
            "plainTextKey"
        ]
        for who in (user, admin)
    ]
    for query, variables in every_admin_operation(str(user.id)):
        assert await gql.error_code(query, variables, token=user.token) == "FORBIDDEN", query
        for key in keys:
            assert await gql.error_code(query, variables, api_key=key) == "FORBIDDEN", query
        assert await gql.error_code(query, variables) == "UNAUTHENTICATED", query
    # Over a websocket too.
    async with graphql_ws(api.ws_url, {"X-API-Key": keys[1]}) as ws:
        messages = await ws.request(ADJUST, {"u": str(user.id), "a": 5, "r": "x"})
        assert messages[0]["payload"]["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    async with graphql_ws(api.ws_url, {"Authorization": f"Bearer {user.token}"}) as ws:
        messages = await ws.request(USERS, {"first": 5})
        assert messages[0]["payload"]["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    # Asked beside an allowed field, the admin field is the one refused.
    body = await gql.execute("{ me { id } adminUsers(first: 1) { totalCount } }", token=user.token)
    assert [e["path"] for e in body["errors"]] == [["adminUsers"]]
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert await gql.ok(CREDITS, token=user.token) == before
    assert await AdminAuditEntry.all().count() == audit_before


async def test_admin_users_search_and_pages_with_balances(gql, admin, new_user):
    people = [new_user(f"findme-{i}-{admin.id.hex[:6]}@example.com") for i in range(3)]
    for person in people:
        await gql.ok("{ me { id } }", token=person.token)
    await gql.ok(ADJUST, {"u": str(people[1].id), "a": 40, "r": "thanks"}, token=admin.token)
    search = f"FINDME-1-{admin.id.hex[:6]}"  # any case, any part of the email
    [found] = [
        e["node"]
        for e in (await gql.ok(USERS, {"search": search, "first": 10}, token=admin.token))[
            "adminUsers"
        ]["edges"]
    ]
    assert found["id"] == str(people[1].id) and found["credits"] == 250 + 40
    by_id = (await gql.ok(USERS, {"search": str(people[2].id), "first": 10}, token=admin.token))[
        "adminUsers"
    ]
    assert [e["node"]["email"] for e in by_id["edges"]] == [people[2].email]
    seen, after = [], None
    while True:
        page = (
            await gql.ok(
                USERS,
                {"search": f"-{admin.id.hex[:6]}@", "first": 2, "after": after},
                token=admin.token,
            )
        )["adminUsers"]
        assert page["totalCount"] == 3
        seen += [e["node"]["email"] for e in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert seen == [p.email for p in reversed(people)]  # newest first
    for variables in ({"first": 0}, {"first": 101}, {"first": 5, "after": "zzz"}):
        code = await gql.error_code(USERS, variables, token=admin.token)
        assert code == "BAD_USER_INPUT", variables
    code = await gql.error_code(USERS, {"first": 5, "search": "x" * 321}, token=admin.token)
    assert code == "BAD_USER_INPUT"


async def test_adjustments_are_ledger_rows_of_their_own_carrying_the_admin(gql, admin, user):
    added = (
        await gql.ok(ADJUST, {"u": str(user.id), "a": 500, "r": " goodwill "}, token=admin.token)
    )["adminAdjustCredits"]
    assert added["type"] == "ADMIN_ADJUSTMENT" and added["amount"] == 500
    assert added["runningBalance"] == 750 and added["description"] == "goodwill"
    assert added["metadata"]["adminId"] == str(admin.id)
    taken = (await gql.ok(ADJUST, {"u": str(user.id), "a": -700, "r": "abuse"}, token=admin.token))[
        "adminAdjustCredits"
    ]
    assert taken["runningBalance"] == 50
    assert (await gql.ok(CREDITS, token=user.token))["me"]["credits"] == 50
    # The user sees both in their own history.
    mine = await gql.ok(
        "{ creditHistory(type: ADMIN_ADJUSTMENT) { transactions { amount description } } }",
        token=user.token,
    )
    assert mine["creditHistory"]["transactions"] == [
        {"amount": -700, "description": "abuse"},
        {"amount": 500, "description": "goodwill"},
    ]
    rows_before = await CreditTransaction.filter(user_id=user.id).count()
    for variables, code in [
        ({"u": str(user.id), "a": -51, "r": "too much"}, "INSUFFICIENT_CREDITS"),
        ({"u": str(user.id), "a": 0, "r": "nothing"}, "BAD_USER_INPUT"),
        ({"u": str(user.id), "a": 1_000_001, "r": "huge"}, "BAD_USER_INPUT"),
        ({"u": str(user.id), "a": 5, "r": "   "}, "BAD_USER_INPUT"),
        ({"u": str(user.id), "a": 5, "r": "x" * 2001}, "BAD_USER_INPUT"),
        ({"u": "00000000-0000-0000-0000-000000000000", "a": 5, "r": "x"}, "NOT_FOUND"),
        ({"u": "someone", "a": 5, "r": "x"}, "NOT_FOUND"),
    ]:
        assert await gql.error_code(ADJUST, variables, token=admin.token) == code, variables
    assert await CreditTransaction.filter(user_id=user.id).count() == rows_before
    history = (await gql.ok(HISTORY, {"u": str(user.id)}, token=admin.token))["adminCreditHistory"]
    assert [t["amount"] for t in history["transactions"]] == [-700, 500, 250]
    only = (await gql.ok(HISTORY, {"u": str(user.id), "type": "GRANT"}, token=admin.token))[
        "adminCreditHistory"
    ]
    assert [t["type"] for t in only["transactions"]] == ["GRANT"]
    code = await gql.error_code(HISTORY, {"u": "nobody"}, token=admin.token)
    assert code == "NOT_FOUND"


async def test_the_audit_log_says_who_did_what_to_whom_and_when(gql, new_user, user):
    admin = new_user(admin=True)
    other_admin = new_user(admin=True)
    await gql.ok(ADJUST, {"u": str(user.id), "a": 25, "r": "bonus"}, token=admin.token)
    await gql.ok(HISTORY, {"u": str(user.id)}, token=admin.token)
    await gql.ok(USERS, {"search": "nobody-at-all", "first": 1}, token=admin.token)
    await gql.ok(USERS, {"first": 1}, token=other_admin.token)
    mine = (await gql.ok(AUDIT, {"admin": str(admin.id), "first": 10}, token=other_admin.token))[
        "adminAuditLog"
    ]
    entries = [e["node"] for e in mine["edges"]]
    assert [e["action"] for e in entries] == ["LIST_USERS", "VIEW_CREDIT_HISTORY", "ADJUST_CREDITS"]
    assert all(e["adminId"] == str(admin.id) and e["adminEmail"] == admin.email for e in entries)
    adjusted = entries[2]
    assert adjusted["targetUserId"] == str(user.id)
    assert adjusted["details"]["amount"] == 25 and adjusted["details"]["reason"] == "bonus"
    assert adjusted["details"]["balance"] == 275
    assert entries[0]["details"] == {"search": "nobody-at-all"}
    assert entries[0]["createdAt"] > entries[1]["createdAt"] > entries[2]["createdAt"]
    about_user = (await gql.ok(AUDIT, {"target": str(user.id), "first": 10}, token=admin.token))[
        "adminAuditLog"
    ]
    assert {e["node"]["action"] for e in about_user["edges"]} == {
        "ADJUST_CREDITS",
        "VIEW_CREDIT_HISTORY",
    }
    adjustments = (
        await gql.ok(
            AUDIT,
            {"action": "ADJUST_CREDITS", "admin": str(admin.id), "first": 1},
            token=admin.token,
        )
    )["adminAuditLog"]
    assert adjustments["totalCount"] == 1
    # Reading the log is an admin operation too.
    reads = (
        await gql.ok(
            AUDIT,
            {"action": "VIEW_AUDIT_LOG", "admin": str(other_admin.id), "first": 10},
            token=admin.token,
        )
    )["adminAuditLog"]
    assert reads["totalCount"] == 1
    assert (await gql.ok(AUDIT, {"admin": "not-an-id", "first": 5}, token=admin.token))[
        "adminAuditLog"
    ]["totalCount"] == 0
