"""API keys: created once in plain text, stored as a keyed hash, scoped by permissions."""

from __future__ import annotations

import hashlib
import hmac
import secrets
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


def generate_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(settings: Settings, key: str) -> str:
    return hmac.new(settings.API_KEY_PEPPER.encode(), key.encode(), hashlib.sha256).hexdigest()


def _well_formed(key: str) -> bool:
    return key.startswith(API_KEY_PREFIX) and len(key) == len(API_KEY_PREFIX) + _KEY_BODY_LENGTH


async def principal_for_api_key(settings: Settings, key: str) -> Principal:
    """The principal an active key stands for; UNAUTHENTICATED for anything else."""
    if not _well_formed(key):
        raise AppError(ErrorCode.UNAUTHENTICATED, "Invalid API key")
    row = await ApiKey.get_or_none(key_hash=hash_api_key(settings, key))
    if row is None or row.status != ApiKeyStatus.ACTIVE:
        raise AppError(ErrorCode.UNAUTHENTICATED, "Invalid API key")
    now = utcnow()
    if row.last_used_at is None or now - row.last_used_at >= LAST_USED_RESOLUTION:
        await ApiKey.filter(id=row.id).update(last_used_at=now)
    return Principal(
        user_id=row.user_id,  # type: ignore[attr-defined]
        api_key_id=row.id,
        permissions=frozenset(ApiKeyPermission(p) for p in row.permissions),
    )


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
    return row


async def suspend_api_key(user_id: uuid.UUID, key_id: str) -> ApiKey:
    row = await _owned_key(user_id, key_id)
    _refuse_if_revoked(row)
    if row.status != ApiKeyStatus.SUSPENDED:
        row.status = ApiKeyStatus.SUSPENDED
        await row.save(update_fields=["status"])
    return row


async def update_api_key_permissions(
    user_id: uuid.UUID, key_id: str, permissions: list[ApiKeyPermission]
) -> ApiKey:
    row = await _owned_key(user_id, key_id)
    stored = _check_permissions(permissions)
    _refuse_if_revoked(row)
    row.permissions = stored
    await row.save(update_fields=["permissions"])
    return row
