"""API keys: created once in plain text, stored as a keyed hash, scoped by permissions."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
import uuid
from datetime import timedelta

from app.clock import utcnow
from app.errors import AppError, ErrorCode, bad_input, not_found
from app.models import ApiKey, ApiKeyPermission, ApiKeyStatus
from app.principal import Principal
from app.settings import Settings

API_KEY_PREFIX = "agpt_"
# 32 random bytes are 43 URL-safe characters.
_KEY_BODY_LENGTH = 43
# lastUsedAt is written at most this often per key, so using a key is not a write per request.
LAST_USED_RESOLUTION = timedelta(seconds=60)
MAX_NAME = 100
MAX_DESCRIPTION = 1000
# Keys not revoked, per user: `apiKeys` is one unpaged list. Revoked keys stay
# listed (what was revoked, and when, is worth keeping) but do not count.
MAX_LIVE_KEYS = 100


def generate_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(settings: Settings, key: str) -> str:
    return hmac.new(settings.API_KEY_PEPPER.encode(), key.encode(), hashlib.sha256).hexdigest()


_WELL_FORMED = re.compile(re.escape(API_KEY_PREFIX) + f"[A-Za-z0-9_-]{{{_KEY_BODY_LENGTH}}}")

# What each key hash stood for when last read, and until when that answer
# holds (monotonic time). Every API process reads a key's row at most once in
# API_KEY_STATUS_SECONDS, so a revoked or suspended key stops working in all
# of them within that time; the process that revoked it forgets it at once.
API_KEY_STATUS_SECONDS = 2.0
_KEYS_KEPT = 10_000
_known_keys: dict[str, tuple[float, Principal | None]] = {}


def _well_formed(key: str) -> bool:
    return _WELL_FORMED.fullmatch(key) is not None


async def principal_for_api_key(settings: Settings, key: str) -> Principal:
    """The principal an active key stands for; UNAUTHENTICATED for anything else."""
    if not _well_formed(key):
        raise AppError(ErrorCode.UNAUTHENTICATED, "Invalid API key")
    digest = hash_api_key(settings, key)
    now = time.monotonic()
    known = _known_keys.get(digest)
    if known is not None and known[0] > now:
        principal = known[1]
    else:
        principal = await _read_key(digest)
        if len(_known_keys) >= _KEYS_KEPT:
            _known_keys.clear()
        _known_keys[digest] = (now + API_KEY_STATUS_SECONDS, principal)
    if principal is None:
        raise AppError(ErrorCode.UNAUTHENTICATED, "Invalid API key")
    return principal


async def _read_key(digest: str) -> Principal | None:
    row = await ApiKey.get_or_none(key_hash=digest)
    if row is None or row.status != ApiKeyStatus.ACTIVE:
        return None
    now = utcnow()
    if row.last_used_at is None or now - row.last_used_at >= LAST_USED_RESOLUTION:
        await ApiKey.filter(id=row.id).update(last_used_at=now)
    return Principal(
        user_id=row.user_id,  # type: ignore[attr-defined]
        api_key_id=row.id,
        permissions=frozenset(ApiKeyPermission(p) for p in row.permissions),
    )


def _forget(row: ApiKey) -> None:
    _known_keys.pop(row.key_hash, None)


def _check_permissions(permissions: list[ApiKeyPermission]) -> list[str]:
    if not permissions:
        raise bad_input("An API key needs at least one permission", field="permissions")
    return [p.value for p in dict.fromkeys(permissions)]


def _check_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > MAX_NAME:
        raise bad_input(f"name must be 1 to {MAX_NAME} characters", field="name")
    return name


async def create_api_key(
    settings: Settings,
    user_id: uuid.UUID,
    name: str,
    description: str | None,
    permissions: list[ApiKeyPermission],
) -> tuple[ApiKey, str]:
    name = _check_name(name)
    if description is not None and len(description) > MAX_DESCRIPTION:
        raise bad_input(f"description is longer than {MAX_DESCRIPTION} characters")
    stored_permissions = _check_permissions(permissions)
    live = ApiKey.filter(user_id=user_id).exclude(status=ApiKeyStatus.REVOKED)
    if await live.count() >= MAX_LIVE_KEYS:
        raise bad_input(f"at most {MAX_LIVE_KEYS} keys that are not revoked; revoke one first")
    plain = generate_api_key()
    row = await ApiKey.create(
        id=uuid.uuid4(),
        user_id=user_id,
        name=name,
        description=description,
        key_hash=hash_api_key(settings, plain),
        prefix=plain[:8],
        postfix=plain[-4:],
        status=ApiKeyStatus.ACTIVE,
        permissions=stored_permissions,
    )
    return row, plain


async def list_api_keys(user_id: uuid.UUID) -> list[ApiKey]:
    return await ApiKey.filter(user_id=user_id).order_by("-created_at")


def _parse_id(key_id: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(key_id))
    except ValueError:
        return None


async def get_api_key(user_id: uuid.UUID, key_id: str) -> ApiKey | None:
    parsed = _parse_id(key_id)
    if parsed is None:
        return None
    return await ApiKey.get_or_none(id=parsed, user_id=user_id)


async def _owned_key(user_id: uuid.UUID, key_id: str) -> ApiKey:
    row = await get_api_key(user_id, key_id)
    if row is None:
        raise not_found("API key")
    return row


def _refuse_if_revoked(row: ApiKey) -> None:
    if row.status == ApiKeyStatus.REVOKED:
        raise AppError(ErrorCode.CONFLICT, "The API key is revoked; revoking is final")


async def revoke_api_key(user_id: uuid.UUID, key_id: str) -> ApiKey:
    row = await _owned_key(user_id, key_id)
    _refuse_if_revoked(row)
    row.status = ApiKeyStatus.REVOKED
    row.revoked_at = utcnow()
    await row.save(update_fields=["status", "revoked_at"])
    _forget(row)
    return row


async def suspend_api_key(user_id: uuid.UUID, key_id: str) -> ApiKey:
    row = await _owned_key(user_id, key_id)
    _refuse_if_revoked(row)
    if row.status != ApiKeyStatus.SUSPENDED:
        row.status = ApiKeyStatus.SUSPENDED
        await row.save(update_fields=["status"])
    _forget(row)
    return row


async def update_api_key_permissions(
    user_id: uuid.UUID, key_id: str, permissions: list[ApiKeyPermission]
) -> ApiKey:
    row = await _owned_key(user_id, key_id)
    stored = _check_permissions(permissions)
    _refuse_if_revoked(row)
    row.permissions = stored
    await row.save(update_fields=["permissions"])
    _forget(row)
    return row
