"""Webhook triggers: made when a graph (or a preset) with a WebhookTrigger node is
saved, enabled or disabled, their signing secret rotated, their deliveries listed.

A trigger's URL is `PUBLIC_API_URL/api/triggers/<trigger id>`; the signing secret
is shown once, by rotateTriggerSecret, and kept encrypted like credentials.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass

from tortoise.exceptions import IntegrityError

from app.blocks.base import Block
from app.blocks.registry import get_block
from app.blocks.triggers import WEBHOOK_TRIGGER_BLOCK_NAME
from app.clock import utcnow
from app.errors import not_found
from app.models import Node, Trigger, TriggerDelivery
from app.services.graph_validation import parse_uuid
from app.services.pagination import check_page_size, encode_cursor, rows_after
from app.services.secret_box import secret_box
from app.settings import Settings

SECRET_PREFIX = "agwh_"
MAX_DELIVERIES_PAGE = 100


def is_trigger_block(block: Block | None) -> bool:
    return block is not None and block.name == WEBHOOK_TRIGGER_BLOCK_NAME


def trigger_node(nodes: list[Node]) -> Node | None:
    """A graph version's WebhookTrigger node (validation allows at most one)."""
    return next((n for n in nodes if is_trigger_block(get_block(n.block_id))), None)


def graph_scope(graph_id: uuid.UUID) -> str:
    return f"graph:{graph_id}"


def preset_scope(preset_id: uuid.UUID) -> str:
    return f"preset:{preset_id}"


def trigger_url(settings: Settings, trigger: Trigger) -> str:
    return f"{settings.PUBLIC_API_URL.rstrip('/')}/api/triggers/{trigger.id}"


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


async def ensure_trigger(
    settings: Settings,
    user_id: uuid.UUID,
    graph_id: uuid.UUID,
    preset_id: uuid.UUID | None = None,
) -> Trigger:
    """The graph's (or the preset's) trigger, made once, with a secret nobody knows
    until the owner rotates it."""
    scope = preset_scope(preset_id) if preset_id else graph_scope(graph_id)
    existing = await Trigger.get_or_none(scope=scope)
    if existing is not None:
        return existing
    try:
        return await Trigger.create(
            id=uuid.uuid4(),
            user_id=user_id,
            graph_id=graph_id,
            preset_id=preset_id,
            scope=scope,
            encrypted_secret=secret_box(settings).encrypt(new_secret()),
        )
    except IntegrityError:  # made by a concurrent save
        return await Trigger.get(scope=scope)


async def graph_trigger(user_id: uuid.UUID, graph_id: uuid.UUID) -> Trigger | None:
    """The user's own trigger of the graph (not a preset's)."""
    return await Trigger.get_or_none(scope=graph_scope(graph_id), user_id=user_id)


async def preset_trigger(preset_id: uuid.UUID) -> Trigger | None:
    return await Trigger.get_or_none(scope=preset_scope(preset_id))


async def _own_trigger(user_id: uuid.UUID, trigger_id: str) -> Trigger:
    parsed = parse_uuid(trigger_id)
    trigger = await Trigger.get_or_none(id=parsed, user_id=user_id) if parsed else None
    if trigger is None:
        raise not_found("Trigger")
    return trigger


async def rotate_secret(
    settings: Settings, user_id: uuid.UUID, trigger_id: str
) -> tuple[Trigger, str]:
    """A new signing secret, returned this once; the old one stops working at once."""
    trigger = await _own_trigger(user_id, trigger_id)
    secret = new_secret()
    trigger.encrypted_secret = secret_box(settings).encrypt(secret)
    trigger.secret_rotated_at = utcnow()
    await trigger.save(update_fields=["encrypted_secret", "secret_rotated_at"])
    return trigger, secret


async def set_enabled(user_id: uuid.UUID, trigger_id: str, enabled: bool) -> Trigger:
    trigger = await _own_trigger(user_id, trigger_id)
    trigger.is_enabled = enabled
    await trigger.save(update_fields=["is_enabled"])
    return trigger


@dataclass
class DeliveryPage:
    deliveries: list[TriggerDelivery]
    total: int
    has_next: bool

    @staticmethod
    def cursor(delivery: TriggerDelivery) -> str:
        return encode_cursor(delivery.received_at, delivery.id)


async def list_deliveries(
    user_id: uuid.UUID, graph_id: uuid.UUID, first: int, after: str | None
) -> DeliveryPage:
    """Deliveries to the user's triggers of this graph (its own and its presets'),
    newest first."""
    check_page_size(first, MAX_DELIVERIES_PAGE)
    trigger_ids = await Trigger.filter(user_id=user_id, graph_id=graph_id).values_list(
        "id", flat=True
    )
    if not trigger_ids:
        return DeliveryPage([], 0, False)
    base = TriggerDelivery.filter(trigger_id__in=list(trigger_ids))
    query = base
    if after:
        query = query.filter(rows_after(after, time_field="received_at"))
    rows = await query.order_by("-received_at", "-id").limit(first + 1)
    return DeliveryPage(rows[:first], await base.count(), len(rows) > first)
