"""Admin operations: signed-in admins only (JWT role admin), never an API key.
Each one is written to the audit log by its service."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import strawberry

from app.context import Info
from app.services import admin, refunds
from schema.permissions import AdminOnly
from schema.types.admin import (
    AdminAction,
    AdminUser,
    AdminUserConnection,
    AdminUserEdge,
    AuditLogConnection,
    AuditLogEdge,
    AuditLogEntry,
    RefundRequestConnection,
    RefundRequestEdge,
)
from schema.types.credits import (
    CreditTransaction,
    CreditTransactionPage,
    CreditTransactionType,
    RefundRequest,
    RefundRequestStatus,
)
from schema.types.graphs import PageInfo


def _page_info(has_next: bool, edges: list) -> PageInfo:
    return PageInfo(has_next_page=has_next, end_cursor=edges[-1].cursor if edges else None)


@strawberry.type
class AdminQueries:
    @strawberry.field(
        permission_classes=[AdminOnly],
        description="Admins: users newest first, with balances; search matches email or id.",
    )
    async def admin_users(
        self,
        info: Info,
        search: str | None = None,
        first: Annotated[int, strawberry.argument(description="1 to 100.")] = 50,
        after: str | None = None,
    ) -> AdminUserConnection:
        page = await admin.list_users(await info.context.principal(), search, first, after)
        edges = [
            AdminUserEdge(
                cursor=page.cursor(row),
                node=AdminUser.from_model(row, page.balances.get(row.id, 0)),
            )
            for row in page.rows
        ]
        return AdminUserConnection(
            edges=edges, page_info=_page_info(page.has_next, edges), total_count=page.total
        )

    @strawberry.field(
        permission_classes=[AdminOnly],
        description="Admins: one user's credit history, as creditHistory shows it to them.",
    )
    async def admin_credit_history(
        self,
        info: Info,
        user_id: strawberry.ID,
        before: datetime | None = None,
        type: CreditTransactionType | None = None,
        first: Annotated[int, strawberry.argument(description="1 to 1000.")] = 100,
    ) -> CreditTransactionPage:
        page = await admin.credit_history(
            await info.context.principal(), str(user_id), before=before, type=type, first=first
        )
        return CreditTransactionPage(
            transactions=[CreditTransaction.from_model(row) for row in page.transactions],
            next_transaction_time=page.next_transaction_time,
        )

    @strawberry.field(
        permission_classes=[AdminOnly],
        description="Admins: every user's refund requests, oldest first.",
    )
    async def admin_refund_requests(
        self,
        info: Info,
        status: RefundRequestStatus | None = None,
        first: Annotated[int, strawberry.argument(description="1 to 100.")] = 50,
        after: str | None = None,
    ) -> RefundRequestConnection:
        page = await admin.list_refund_requests(
            await info.context.principal(), status, first, after
        )
        edges = [
            RefundRequestEdge(cursor=page.cursor(row), node=RefundRequest.from_model(row))
            for row in page.rows
        ]
        return RefundRequestConnection(
            edges=edges, page_info=_page_info(page.has_next, edges), total_count=page.total
        )

    @strawberry.field(
        permission_classes=[AdminOnly], description="Admins: what admins did, newest first."
    )
    async def admin_audit_log(
        self,
        info: Info,
        first: Annotated[int, strawberry.argument(description="1 to 100.")] = 50,
        after: str | None = None,
        action: AdminAction | None = None,
        admin_id: strawberry.ID | None = None,
        target_user_id: strawberry.ID | None = None,
    ) -> AuditLogConnection:
        page = await admin.audit_log(
            await info.context.principal(),
            first=first,
            after=after,
            action=action,
            admin_id=str(admin_id) if admin_id is not None else None,
            target_user_id=str(target_user_id) if target_user_id is not None else None,
        )
        edges = [
            AuditLogEdge(cursor=page.cursor(row), node=AuditLogEntry.from_model(row))
            for row in page.rows
        ]
        return AuditLogConnection(
            edges=edges, page_info=_page_info(page.has_next, edges), total_count=page.total
        )


@strawberry.type
class AdminMutations:
    @strawberry.mutation(
        permission_classes=[AdminOnly],
        description=(
            "Admins: refund a PENDING request through Stripe (all of the top-up, or amount "
            "of it) and take the credits back."
        ),
    )
    async def approve_refund_request(
        self, info: Info, id: strawberry.ID, amount: int | None = None
    ) -> RefundRequest:
        services = info.context.services
        row = await refunds.approve_request(
            services.settings, services.notifier, await info.context.principal(), str(id), amount
        )
        return RefundRequest.from_model(row)

    @strawberry.mutation(
        permission_classes=[AdminOnly],
        description="Admins: decline a PENDING request; the reason is shown to the user.",
    )
    async def reject_refund_request(
        self, info: Info, id: strawberry.ID, reason: str
    ) -> RefundRequest:
        row = await refunds.reject_request(
            info.context.services.notifier, await info.context.principal(), str(id), reason
        )
        return RefundRequest.from_model(row)

    @strawberry.mutation(
        permission_classes=[AdminOnly],
        description=(
            "Admins: add (positive) or take away (negative) credits, as an ADMIN_ADJUSTMENT "
            "ledger row carrying the admin and the reason."
        ),
    )
    async def admin_adjust_credits(
        self, info: Info, user_id: strawberry.ID, amount: int, reason: str
    ) -> CreditTransaction:
        row = await admin.adjust_credits(
            await info.context.principal(), str(user_id), amount, reason
        )
        return CreditTransaction.from_model(row)
