"""The credit ledger, refunds and top-ups as clients see them."""

from __future__ import annotations

from datetime import datetime

import strawberry
from strawberry.scalars import JSON

from app import models

CreditTransactionType = strawberry.enum(models.CreditTransactionType, name="CreditTransactionType")
RefundRequestStatus = strawberry.enum(models.RefundRequestStatus, name="RefundRequestStatus")


@strawberry.type
class CreditTransaction:
    key: strawberry.ID
    type: CreditTransactionType
    amount: int = strawberry.field(description="Positive adds credits, negative takes them.")
    running_balance: int = strawberry.field(description="Balance right after this transaction.")
    created_at: datetime
    description: str | None
    usage_graph_id: strawberry.ID | None
    usage_execution_id: strawberry.ID | None
    usage_node_count: int | None
    metadata: JSON | None

    @classmethod
    def from_model(cls, row: models.CreditTransaction) -> CreditTransaction:
        return cls(
            key=strawberry.ID(row.key),
            type=row.type,
            amount=row.amount,
            running_balance=row.running_balance or 0,
            created_at=row.created_at,
            description=row.description,
            usage_graph_id=_id(row.usage_graph_id),
            usage_execution_id=_id(row.usage_execution_id),
            usage_node_count=row.usage_node_count,
            metadata=row.metadata,
        )


def _id(value: object) -> strawberry.ID | None:
    return strawberry.ID(str(value)) if value is not None else None


@strawberry.type
class CreditTransactionPage:
    transactions: list[CreditTransaction]
    next_transaction_time: datetime | None = strawberry.field(
        description="Pass as before to get the next page; null on the last page."
    )
    next_cursor: str | None = strawberry.field(
        default=None,
        description=(
            "Pass as after to get the next page (never drops transactions that share "
            "a time); null on the last page."
        ),
    )


@strawberry.type
class RefundRequest:
    id: strawberry.ID
    transaction_key: strawberry.ID
    amount: int
    reason: str
    result: str | None
    status: RefundRequestStatus
    created_at: datetime
    updated_at: datetime
    user_id: strawberry.ID = strawberry.field(description="Whose top-up it is.")
    decided_at: datetime | None = strawberry.field(
        description="When it was approved or rejected; null while PENDING."
    )

    @classmethod
    def from_model(cls, row: models.RefundRequest) -> RefundRequest:
        return cls(
            id=strawberry.ID(str(row.id)),
            user_id=strawberry.ID(str(row.user_id)),  # type: ignore[attr-defined]
            decided_at=row.decided_at,
            transaction_key=strawberry.ID(row.transaction_key),
            amount=row.amount,
            reason=row.reason,
            result=row.result,
            status=row.status,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


@strawberry.type
class AutoTopUpConfig:
    threshold: int
    amount: int
    id: strawberry.ID = strawberry.field(
        description="The user's id: one per user, so client caches keep a single copy."
    )


@strawberry.type
class CheckoutSession:
    checkout_url: str
    session_id: strawberry.ID
