"""Webhook triggers: rotate the signing secret, enable or disable (Graph.trigger reads them)."""

from __future__ import annotations

import strawberry

from app.context import Info
from app.services import trigger_setup
from schema.permissions import SignedInUser
from schema.types.triggers import Trigger, TriggerSecret


@strawberry.type
class TriggerMutations:
    @strawberry.mutation(
        permission_classes=[SignedInUser],
        description="A new signing secret, shown this once; the old one stops working at once.",
    )
    async def rotate_trigger_secret(self, info: Info, id: strawberry.ID) -> TriggerSecret:
        row, secret = await trigger_setup.rotate_secret(
            info.context.settings, await info.context.user_id(), id
        )
        return TriggerSecret(trigger=Trigger.from_model(row), secret=secret)

    @strawberry.mutation(
        permission_classes=[SignedInUser],
        description="A disabled trigger answers 404 and starts nothing.",
    )
    async def set_trigger_enabled(self, info: Info, id: strawberry.ID, is_enabled: bool) -> Trigger:
        row = await trigger_setup.set_enabled(await info.context.user_id(), id, is_enabled)
        return Trigger.from_model(row)
