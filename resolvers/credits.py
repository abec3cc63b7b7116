"""Credits: history, top-ups, refunds, auto top-up. Signed-in people only (no API keys)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import strawberry

from app.context import Info
from app.services import credits, refunds, users
from schema.permissions import SignedInUser
from schema.types.credits import (
    AutoTopUpConfig,
    CheckoutSession,
    CreditTransaction,
    CreditTransactionPage,
    CreditTransactionType,
    RefundRequest,
)
from schema.types.users import User


@strawberry.type
class CreditQueries:
    @strawberry.field(permission_classes=[SignedInUser])
    async def credit_history(
        self,
        info: Info,
        before: Annotated[
            datetime | None,
            strawberry.argument(description="Only transactions strictly older than this time."),
        ] = None,
        type: CreditTransactionType | None = None,
        first: Annotated[int, strawberry.argument(description="1 to 1000.")] = 100,
        after: Annotated[
            str | None,
            strawberry.argument(
                description="The previous page's nextCursor: the transactions after it."
            ),
        ] = None,
    ) -> CreditTransactionPage:
        page = await credits.credit_history(
            await info.context.user_id(), before=before, type=type, first=first, after=after
        )
        return CreditTransactionPage(
            transactions=[CreditTransaction.from_model(row) for row in page.transactions],
            next_transaction_time=page.next_transaction_time,
            next_cursor=page.next_cursor,
        )

    @strawberry.field(permission_classes=[SignedInUser])
    async def refund_requests(self, info: Info) -> list[RefundRequest]:
        rows = await refunds.user_requests(await info.context.user_id())
        return [RefundRequest.from_model(row) for row in rows]

    @strawberry.field(permission_classes=[SignedInUser])
    async def auto_top_up(self, info: Info) -> AutoTopUpConfig:
        config = await credits.get_auto_top_up(await info.context.user_id())
        return AutoTopUpConfig(threshold=config.threshold, amount=config.amount, id=config.user_id)


@strawberry.type
class CreditMutations:
    @strawberry.mutation(
        permission_classes=[SignedInUser],
        description="Starts a Stripe Checkout for this many credits (1 credit = 1 cent).",
    )
    async def request_top_up(self, info: Info, amount: int) -> CheckoutSession:
        checkout = await credits.request_top_up(
            info.context.settings, await info.context.user_id(), amount
        )
        return CheckoutSession(
            checkout_url=checkout.url, session_id=strawberry.ID(checkout.session_id)
        )

    @strawberry.mutation(
        permission_classes=[SignedInUser],
        description="Re-checks the user's open checkouts with Stripe and credits the paid ones.",
    )
    async def fulfill_checkout(self, info: Info) -> User:
        user_id = await info.context.user_id()
        await credits.fulfill_checkout(info.context.settings, user_id)
        return User.from_model(await users.get_user(user_id))

    @strawberry.mutation(permission_classes=[SignedInUser])
    async def refund_top_up(
        self, info: Info, transaction_key: strawberry.ID, reason: str
    ) -> RefundRequest:
        services = info.context.services
        row = await refunds.refund_top_up(
            services.settings,
            services.notifier,
            await info.context.user_id(),
            str(transaction_key),
            reason,
        )
        return RefundRequest.from_model(row)

    @strawberry.mutation(
        permission_classes=[SignedInUser], description="amount 0 turns auto top-up off."
    )
    async def configure_auto_top_up(
        self, info: Info, threshold: int, amount: int
    ) -> AutoTopUpConfig:
        config = await credits.configure_auto_top_up(
            info.context.settings, await info.context.user_id(), threshold, amount
        )
        return AutoTopUpConfig(threshold=config.threshold, amount=config.amount, id=config.user_id)

    @strawberry.mutation(
        permission_classes=[SignedInUser], description="A Stripe billing portal URL."
    )
    async def manage_payment_method(self, info: Info) -> str:
        return await credits.billing_portal_url(info.context.settings, await info.context.user_id())
