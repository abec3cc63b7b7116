"""Who is calling: JWT and API-key principals (SEMANTICS.md §1)."""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

import jwt

from app.errors import AppError, ErrorCode
from app.principal import Principal
from app.services.api_keys import principal_for_api_key
from app.settings import Settings


def unauthenticated(message: str = "Sign-in required") -> AppError:
    return AppError(ErrorCode.UNAUTHENTICATED, message)


def issue_jwt(
    settings: Settings,
    user_id: uuid.UUID | str,
    email: str,
    *,
    admin: bool = False,
    expires_in: int = 30 * 24 * 3600,
) -> str:
    now = int(time.time())
    claims = {
        "sub": str(user_id),
        "email": email,
        "role": "admin" if admin else "authenticated",
        "aud": settings.JWT_AUDIENCE,
        "iat": now,
        "exp": now + expires_in,
    }
    return jwt.encode(claims, settings.JWT_SECRET, algorithm="HS256")


# Verified tokens, until their `exp`: a client sends the same token with every
# request, and checking its signature is a tenth of a small request's CPU.
_VERIFIED: OrderedDict[tuple[str, str, str], Principal] = OrderedDict()
TOKENS_KEPT = 4096


def decode_jwt(settings: Settings, token: str) -> Principal:
    key = (token, settings.JWT_SECRET, settings.JWT_AUDIENCE)
    known = _VERIFIED.get(key)
    if known is None:
        known = _verify_jwt(settings, token)
        _VERIFIED[key] = known
        if len(_VERIFIED) > TOKENS_KEPT:
            _VERIFIED.popitem(last=False)
    if known.expires_at is not None and known.expires_at <= time.time():
        _VERIFIED.pop(key, None)
        raise unauthenticated("Invalid or expired token")
    return known


def _verify_jwt(settings: Settings, token: str) -> Principal:
    try:
        claims = jwt.decode(
            token,
            settings.JWT_SECRET,
            algorithms=["HS256"],
            audience=settings.JWT_AUDIENCE,
            options={"require": ["sub", "exp"]},
        )
        user_id = uuid.UUID(str(claims["sub"]))
        expires_at = float(claims["exp"])
    except (jwt.PyJWTError, ValueError, TypeError) as exc:
        # ValueError covers text UTF-8 cannot carry (a lone surrogate).
        raise unauthenticated("Invalid or expired token") from exc
    return Principal(
        user_id=user_id,
        email=str(claims.get("email") or ""),
        is_admin=claims.get("role") == "admin",
        expires_at=expires_at,
    )


@dataclass(frozen=True)
class Credentials:
    """What a request presented, before anything is looked up."""

    bearer: str | None = None
    api_key: str | None = None

    @property
    def present(self) -> bool:
        return bool(self.bearer or self.api_key)


def credentials_from(headers: Mapping[str, object]) -> Credentials:
    """Read credentials from HTTP headers or a connection_init payload (any key case)."""
    lowered = {str(k).lower(): v for k, v in headers.items()}
    bearer = None
    authorization = lowered.get("authorization")
    if isinstance(authorization, str) and authorization.strip():
        scheme, _, token = authorization.strip().partition(" ")
        # A non-Bearer scheme is presented-but-invalid, not absent.
        bearer = token.strip() if scheme.lower() == "bearer" else authorization
    api_key = lowered.get("x-api-key")
    return Credentials(
        bearer=bearer or None,
        api_key=api_key.strip() if isinstance(api_key, str) and api_key.strip() else None,
    )


async def authenticate(settings: Settings, credentials: Credentials) -> Principal | None:
    """The principal the credentials prove, None without credentials; raises when
    invalid. A key's status is at most API_KEY_STATUS_SECONDS old, a token's
    `exp` is checked every time."""
    if credentials.bearer:
        return decode_jwt(settings, credentials.bearer)
    if credentials.api_key:
        return await principal_for_api_key(settings, credentials.api_key)
    return None
