"""What admins see: users with balances, refund requests, the audit log."""

from __future__ import annotations

from datetime import datetime

import strawberry
from strawberry.scalars import JSON

from app import models
from schema.types.credits import RefundRequest
from schema.types.graphs import PageInfo

AdminAction = strawberry.enum(models.AdminAction, name="AdminAction")


@strawberry.type
class AdminUser:
    id: strawberry.ID
    email: str
    name: str | None
    timezone: str
    created_at: datetime
    credits: int = strawberry.field(description="Current balance in credits.")

    @classmethod
    def from_model(cls, row: models.User, balance: int) -> AdminUser:
        return cls(
            id=strawberry.ID(str(row.id)),
            email=row.email,
            name=row.name,
            timezone=row.timezone,
            created_at=row.created_at,
            credits=balance,
        )


@strawberry.type
class AdminUserEdge:
    cursor: str
    node: AdminUser


@strawberry.type
class AdminUserConnection:
    edges: list[AdminUserEdge]
    page_info: PageInfo
    total_count: int


@strawberry.type
class AuditLogEntry:
    id: strawberry.ID
    admin_id: strawberry.ID
    admin_email: str
    action: AdminAction
    target_user_id: strawberry.ID | None
    details: JSON | None
    created_at: datetime

    @classmethod
    def from_model(cls, row: models.AdminAuditEntry) -> AuditLogEntry:
        return cls(
            id=strawberry.ID(str(row.id)),
            admin_id=strawberry.ID(str(row.admin_id)),
            admin_email=row.admin_email,
            action=row.action,
            target_user_id=strawberry.ID(str(row.target_user_id)) if row.target_user_id else None,
            details=row.details,
            created_at=row.created_at,
        )


@strawberry.type
class AuditLogEdge:
    cursor: str
    node: AuditLogEntry


@strawberry.type
class AuditLogConnection:
    edges: list[AuditLogEdge]
    page_info: PageInfo
    total_count: int


@strawberry.type
class RefundRequestEdge:
    cursor: str
    node: RefundRequest


@strawberry.type
class RefundRequestConnection:
    edges: list[RefundRequestEdge]
    page_info: PageInfo
    total_count: int
