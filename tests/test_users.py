"""Users: first sight, email, time zone, notification preferences (SEMANTICS.md §4)."""

from __future__ import annotations

import asyncio
import uuid

from app.models import CreditTransaction, NotificationPreferences, NotificationType, User

ME = """{ me { id email name timezone credits createdAt
        notificationPreferences { dailyLimit settings { type enabled } } } }"""


async def test_first_sight_creates_user_with_defaults(gql, new_user, settings):
    person = new_user()
    me = (await gql.ok(ME, token=person.token))["me"]
    assert me["id"] == str(person.id)
    assert me["email"] == person.email
    assert me["timezone"] == "UTC"
    assert me["name"] is None
    assert me["credits"] == settings.STARTING_CREDITS == 250
    prefs = me["notificationPreferences"]
    assert prefs["dailyLimit"] == 10
    # Every notification type, each on.
    assert [s["type"] for s in prefs["settings"]] == [t.value for t in NotificationType]
    assert all(s["enabled"] for s in prefs["settings"])
    assert me["createdAt"].endswith("+00:00")


async def test_starting_credits_granted_once_even_when_first_requests_race(gql, new_user):
    person = new_user()
    results = await asyncio.gather(*(gql.execute(ME, token=person.token) for _ in range(8)))
    assert all("errors" not in r for r in results), results
    assert {r["data"]["me"]["credits"] for r in results} == {250}
    grants = await CreditTransaction.filter(user_id=person.id, type="GRANT").count()
    assert grants == 1
    assert await User.filter(id=person.id).count() == 1
    assert (await gql.ok("{ me { credits } }", token=person.token))["me"]["credits"] == 250


async def test_update_email(gql, user):
    data = await gql.ok(
        'mutation { updateEmail(email: "New.Person@Example.com") { email } }', token=user.token
    )
    assert data["updateEmail"]["email"] == "New.Person@example.com"


async def test_invalid_email_is_refused_and_nothing_changes(gql, user):
    for email in ("not-an-email", "a@", "@b.test", ""):
        error = await gql.error(
            "mutation($e: String!) { updateEmail(email: $e) { email } }",
            {"e": email},
            token=user.token,
        )
        assert error["extensions"]["code"] == "BAD_USER_INPUT", email
    assert (await User.get(id=user.id)).email == user.email


async def test_update_timezone_takes_iana_names(gql, user):
    data = await gql.ok(
        'mutation { updateTimezone(timezone: "Europe/Berlin") { timezone } }', token=user.token
    )
    assert data["updateTimezone"]["timezone"] == "Europe/Berlin"
    assert (await gql.ok("{ me { timezone } }", token=user.token))["me"]["timezone"] == (
        "Europe/Berlin"
    )


async def test_unknown_timezone_is_refused_and_nothing_changes(gql, user):
    for zone in ("Mars/Olympus", "CEST", "", "../etc/passwd", "europe/berlin"):
        code = await gql.error_code(
            "mutation($z: String!) { updateTimezone(timezone: $z) { timezone } }",
            {"z": zone},
            token=user.token,
        )
        assert code == "BAD_USER_INPUT", zone
    assert (await User.get(id=user.id)).timezone == "UTC"


UPDATE_PREFS = """mutation($input: NotificationPreferencesInput!) {
  updateNotificationPreferences(input: $input) { dailyLimit settings { type enabled } } }"""


async def test_update_notification_preferences(gql, user):
    data = await gql.ok(
        UPDATE_PREFS,
        {"input": {"settings": [{"type": "DAILY_SUMMARY", "enabled": False}], "dailyLimit": 3}},
        token=user.token,
    )
    prefs = data["updateNotificationPreferences"]
    assert prefs["dailyLimit"] == 3
    states = {s["type"]: s["enabled"] for s in prefs["settings"]}
    assert states["DAILY_SUMMARY"] is False
    assert states["AGENT_RUN"] is True
    # Only what was sent changes.
    data = await gql.ok(
        UPDATE_PREFS,
        {"input": {"settings": [{"type": "AGENT_RUN", "enabled": False}]}},
        token=user.token,
    )
    prefs = data["updateNotificationPreferences"]
    states = {s["type"]: s["enabled"] for s in prefs["settings"]}
    assert prefs["dailyLimit"] == 3
    assert states["DAILY_SUMMARY"] is False and states["AGENT_RUN"] is False


async def test_bad_notification_preferences_change_nothing(gql, user):
    before = await NotificationPreferences.get(user_id=user.id)
    cases = [
        ({"dailyLimit": -1}, "BAD_USER_INPUT"),
        (
            {"settings": [{"type": "AGENT_RUN", "enabled": False}], "dailyLimit": 100000},
            "BAD_USER_INPUT",
        ),
        ({"settings": [{"type": "NOT_A_TYPE", "enabled": False}]}, "BAD_USER_INPUT"),
    ]
    for payload, code in cases:
        error = await gql.error(UPDATE_PREFS, {"input": payload}, token=user.token)
        assert error["extensions"]["code"] == code, payload
    after = await NotificationPreferences.get(user_id=user.id)
    assert (after.settings, after.daily_limit) == (before.settings, before.daily_limit)


async def test_me_raw_read_agrees_with_the_models(gql, new_user):
    """`me` reads the user and their balance in one SQL statement below the ORM
    (app/services/users.py): every column it names must be the models' own
    (a renamed column breaks this test, not production), and its values must
    be the ORM's, balance included, as `me` shows them."""
    from app.models import UserBalance
    from app.services import users

    user_columns = {field.source_field or name for name, field in User._meta.fields_map.items()}
    assert set(users.USER_COLUMNS) <= user_columns
    for column in users.USER_COLUMNS:
        assert f"u.{column}" in users._PG_USER_WITH_BALANCE
    balance_columns = {
        field.source_field or name for name, field in UserBalance._meta.fields_map.items()
    }
    assert {"user_id", "balance"} <= balance_columns
    assert User._meta.db_table == "users" and UserBalance._meta.db_table == "user_balances"

    person = new_user()
    berlin = 'mutation { updateTimezone(timezone: "Europe/Berlin") { id } }'
    await gql.ok(berlin, token=person.token)
    await User.filter(id=person.id).update(name="Ada")
    await UserBalance.filter(user_id=person.id).update(balance=1234)
    raw = await users.user_with_balance(person.id)
    model = await User.get(id=person.id)
    balance = await UserBalance.get(user_id=person.id)
    assert raw == {
        **{column: getattr(model, column) for column in users.USER_COLUMNS},
        "balance": balance.balance,
    }
    me = (await gql.ok(ME, token=person.token))["me"]
    assert (me["name"], me["timezone"], me["credits"]) == ("Ada", "Europe/Berlin", 1234)
    # No such user: None, and nothing is made.
    assert await users.user_with_balance(uuid.uuid4()) is None
