"""Users: created on first sight of a valid token, with their defaults."""

from __future__ import annotations

import uuid
from collections import OrderedDict
from zoneinfo import available_timezones

from email_validator import EmailNotValidError, validate_email
from tortoise import connections
from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from app.clock import utcnow
from app.errors import bad_input
from app.models import (
    CreditTransactionType,
    NotificationPreferences,
    NotificationType,
    User,
    UserBalance,
    UserOnboarding,
)
from app.principal import Principal
from app.services import ledger
from app.settings import Settings

DEFAULT_DAILY_LIMIT = 10


class _KnownUsers:
    """Ids of users known to exist, so most requests skip the existence query.
    Users are never deleted, so an entry cannot go stale."""

    def __init__(self, size: int = 100_000) -> None:
        self._ids: OrderedDict[uuid.UUID, None] = OrderedDict()
        self._size = size

    def __contains__(self, user_id: uuid.UUID) -> bool:
        if user_id in self._ids:
            self._ids.move_to_end(user_id)
            return True
        return False

    def add(self, user_id: uuid.UUID) -> None:
        self._ids[user_id] = None
        if len(self._ids) > self._size:
            self._ids.popitem(last=False)


_known_users = _KnownUsers()


# `me`, the most frequent request, below the ORM: one joined read of the user
# and their balance (two ORM reads cost ~0.7 ms of CPU more). The columns are
# the models' (tests/test_users.py checks each against them, and the values
# against the ORM's), so a renamed column breaks a test, not production.
USER_COLUMNS = ("id", "email", "name", "timezone", "created_at")
_PG_USER_WITH_BALANCE = (
    "SELECT "
    + ", ".join(f"u.{column}" for column in USER_COLUMNS)
    + ", b.balance FROM users u LEFT JOIN user_balances b ON b.user_id = u.id WHERE u.id = $1"
)


async def user_with_balance(user_id: uuid.UUID) -> dict | None:
    """The user's USER_COLUMNS and `balance` (0 without a balance row), None
    when there is no such user."""
    client = connections.get("default")
    if client.capabilities.dialect != "postgres":
        user = await User.get_or_none(id=user_id)
        if user is None:
            return None
        _known_users.add(user_id)
        row = {column: getattr(user, column) for column in USER_COLUMNS}
        return {**row, "balance": await ledger.get_balance(user_id)}
    async with client.acquire_connection() as conn:
        found = await conn.fetchrow(_PG_USER_WITH_BALANCE, user_id)
    if found is None:
        return None
    _known_users.add(user_id)
    row = dict(found)
    row["balance"] = row["balance"] or 0
    return row


def starting_credits_key(user_id: uuid.UUID) -> str:
    return f"grant:starting-credits:{user_id}"


async def ensure_user(settings: Settings, principal: Principal) -> uuid.UUID:
    """Make sure the caller's user row exists; cheap after the first time."""
    if principal.user_id not in _known_users:
        await get_or_create_user(settings, principal)
    return principal.user_id


async def me(settings: Settings, principal: Principal) -> dict:
    """The caller's user_with_balance row, their user created on first sight."""
    row = await user_with_balance(principal.user_id)
    if row is None:
        await get_or_create_user(settings, principal)
        row = await user_with_balance(principal.user_id)
        assert row is not None
    return row


async def get_or_create_user(settings: Settings, principal: Principal) -> User:
    user = await User.get_or_none(id=principal.user_id)
    if user is None:
        try:
            async with in_transaction() as conn:
                user = await User.create(
                    id=principal.user_id, email=principal.email, timezone="UTC", using_db=conn
                )
                await NotificationPreferences.create(
                    user=user, settings={}, daily_limit=DEFAULT_DAILY_LIMIT, using_db=conn
                )
                await UserOnboarding.create(user=user, using_db=conn)
                await UserBalance.create(user=user, balance=0, using_db=conn)
                if settings.STARTING_CREDITS > 0:
                    # Keyed per user: granted exactly once, with the user's creation.
                    await ledger.record_transaction(
                        user.id,
                        settings.STARTING_CREDITS,
                        CreditTransactionType.GRANT,
                        starting_credits_key(user.id),
                        description="Starting credits",
                    )
        except IntegrityError:
            # A concurrent first request created the user.
            user = await User.get(id=principal.user_id)
    _known_users.add(user.id)
    return user


async def get_user(user_id: uuid.UUID) -> User:
    return await User.get(id=user_id)


async def update_email(user_id: uuid.UUID, email: str) -> User:
    try:
        normalized = validate_email(email.strip(), check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise bad_input(f"Invalid email address: {exc}") from exc
    await User.filter(id=user_id).update(email=normalized)
    return await get_user(user_id)


_TIMEZONES = frozenset(available_timezones())


def is_valid_timezone(name: str) -> bool:
    return name in _TIMEZONES


async def update_timezone(user_id: uuid.UUID, timezone: str) -> User:
    if not is_valid_timezone(timezone):
        raise bad_input(f"Unknown time zone {timezone!r}: use an IANA name like Europe/Berlin")
    await User.filter(id=user_id).update(timezone=timezone)
    return await get_user(user_id)


async def get_notification_preferences(user_id: uuid.UUID) -> NotificationPreferences:
    prefs, _ = await NotificationPreferences.get_or_create(
        user_id=user_id, defaults={"settings": {}, "daily_limit": DEFAULT_DAILY_LIMIT}
    )
    return prefs


def notification_settings(prefs: NotificationPreferences) -> list[tuple[NotificationType, bool]]:
    """Every notification type with its state; a type never set is on."""
    return [(kind, bool(prefs.settings.get(kind.value, True))) for kind in NotificationType]


async def update_notification_preferences(
    user_id: uuid.UUID,
    settings: list[tuple[NotificationType, bool]] | None,
    daily_limit: int | None,
) -> NotificationPreferences:
    if daily_limit is not None and not 0 <= daily_limit <= 1000:
        raise bad_input("dailyLimit must be between 0 and 1000")
    prefs = await get_notification_preferences(user_id)
    if settings:
        prefs.settings = {**prefs.settings, **{kind.value: on for kind, on in settings}}
    if daily_limit is not None:
        prefs.daily_limit = daily_limit
    prefs.updated_at = utcnow()
    # Not save(): on SQLite it binds this one-to-one row's UUID key raw and fails.
    await NotificationPreferences.filter(user_id=user_id).update(
        settings=prefs.settings, daily_limit=prefs.daily_limit, updated_at=prefs.updated_at
    )
    return prefs
