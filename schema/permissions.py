"""Who may call what (SEMANTICS.md §1), as strawberry permission classes.

A permission raises the domain error itself, so the client sees
UNAUTHENTICATED (no or bad credentials) apart from FORBIDDEN (an API key
without the permission, or one asking for something keys may never do).
"""

from __future__ import annotations

from typing import Any

from strawberry.permission import BasePermission

from app.errors import AppError, ErrorCode
from app.models import ApiKeyPermission


class SignedInUser(BasePermission):
    """A signed-in person (JWT). API keys may not manage the account, keys or credits."""

    message = "Sign-in required"

    async def has_permission(self, source: Any, info: Any, **kwargs: Any) -> bool:
        principal = await info.context.principal()
        if principal.via_api_key:
            raise AppError(ErrorCode.FORBIDDEN, "API keys cannot do this; sign in instead")
        return True


def _key_scope(permission: ApiKeyPermission) -> type[BasePermission]:
    class KeyScope(BasePermission):
        message = f"Requires {permission.value}"

        async def has_permission(self, source: Any, info: Any, **kwargs: Any) -> bool:
            principal = await info.context.principal()
            if not principal.allows(permission):
                raise AppError(
                    ErrorCode.FORBIDDEN, f"This API key lacks the {permission.value} permission"
                )
            return True

    KeyScope.__name__ = KeyScope.__qualname__ = "Can" + permission.value.title().replace("_", "")
    return KeyScope


CanReadGraph = _key_scope(ApiKeyPermission.READ_GRAPH)
CanExecuteGraph = _key_scope(ApiKeyPermission.EXECUTE_GRAPH)
CanReadExecution = _key_scope(ApiKeyPermission.READ_EXECUTION)
CanExecuteBlock = _key_scope(ApiKeyPermission.EXECUTE_BLOCK)
CanReadBlock = _key_scope(ApiKeyPermission.READ_BLOCK)
CanManageSchedules = _key_scope(ApiKeyPermission.MANAGE_SCHEDULES)


class AdminOnly(BasePermission):
    """A signed-in admin (JWT with role admin). No API key may do this, whoever made it."""

    message = "Admins only"

    async def has_permission(self, source: Any, info: Any, **kwargs: Any) -> bool:
        principal = await info.context.principal()
        if principal.via_api_key:
            raise AppError(ErrorCode.FORBIDDEN, "API keys cannot do admin operations")
        if not principal.is_admin:
            raise AppError(ErrorCode.FORBIDDEN, "Admins only")
        return True
