"""Webhook deliveries to `POST /api/triggers/{id}`: who may start a run, and the run.

The sender signs like Stripe does: header `AgentGraph-Signature: t=<unix time>,
v1=<hex HMAC-SHA256 of "<t>.<raw body>" with the trigger's secret>`. A timestamp
further than TRIGGER_SIGNATURE_TOLERANCE_SECONDS from now is refused, so a captured
request can only be replayed within the tolerance, and there replays are ignored:
a delivery is known by its `AgentGraph-Delivery-Id` header (the sender's retries
may re-sign with a new time) and, always, by the digest of what was signed. A
delivery that was REJECTED is tried again when it comes again: senders retry what
failed, and a run refused for want of credits may start once the owner topped up.

Refusals change nothing and are not recorded: unknown or disabled trigger (404),
bad signature (401), over-size (413), over the per-trigger rate (429). Every signed
delivery within the limits is recorded, ACCEPTED with its execution or REJECTED
with the reason (body not JSON, inputs or credentials no longer valid, no credits).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from arq import ArqRedis
from tortoise.exceptions import IntegrityError
from tortoise.expressions import F, Q
from tortoise.transactions import in_transaction

from app.blocks.triggers import WEBHOOK_PAYLOAD_PIN
from app.errors import HTTP_STATUS, AppError, ErrorCode
from app.events import EventPublisher
from app.models import (
    Graph,
    GraphSource,
    Node,
    Preset,
    Trigger,
    TriggerDelivery,
    TriggerDeliveryStatus,
)
from app.services import executions, trigger_setup
from app.services.after_commit import AfterCommit, DeferredPublisher, DeferredQueue
from app.services.graph_validation import parse_uuid
from app.services.graphs import get_graph
from app.services.secret_box import SecretUnreadable, secret_box
from app.settings import Settings
from app.storable import first_unstorable

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "agentgraph-signature"
DELIVERY_ID_HEADER = "agentgraph-delivery-id"
_DELIVERY_ID = re.compile(r"[A-Za-z0-9._:-]{1,200}")
RATE_WINDOW_SECONDS = 60


@dataclass
class LiveTrigger:
    """An enabled trigger with the graph version it runs and that version's trigger node."""

    trigger: Trigger
    graph: Graph
    node: Node


@dataclass
class DeliveryResult:
    status_code: int
    body: dict[str, Any]
    outcome: str


async def live_trigger(trigger_id: str) -> LiveTrigger | None:
    """None for an unknown or disabled trigger, and for one whose graph version (the
    active one, or its preset's) cannot run or has no WebhookTrigger node."""
    parsed = parse_uuid(trigger_id)
    trigger = await Trigger.get_or_none(id=parsed, is_enabled=True) if parsed else None
    if trigger is None:
        return None
    owner = trigger.user_id  # type: ignore[attr-defined]
    version = None
    if trigger.preset_id is not None:  # type: ignore[attr-defined]
        preset = await Preset.get_or_none(id=trigger.preset_id)  # type: ignore[attr-defined]
        if preset is None:
            return None
        version = preset.graph_version
    graph = await get_graph(owner, str(trigger.graph_id), version)
    if graph is None:
        return None
    node = trigger_setup.trigger_node(await Node.filter(graph_id=graph.id))
    return LiveTrigger(trigger, graph, node) if node is not None else None


def signed_digest(secret: str, header: str | None, body: bytes, now: float, tolerance: int) -> str:
    """The SHA-256 of the signed content when the signature is good; else
    UNAUTHENTICATED (the message says which part is wrong, never the secret)."""
    timestamp: int | None = None
    candidates: list[str] = []
    for part in (header or "").split(","):
        key, _, value = part.strip().partition("=")
        # ASCII digits only: str.isdigit() also takes "²" (the header is read as
        # Latin-1), which int() then refuses.
        if key == "t" and value.isascii() and value.isdigit() and len(value) <= 12:
            timestamp = int(value)
        elif key == "v1" and value:
            candidates.append(value)
    if timestamp is None or not candidates:
        raise AppError(
            ErrorCode.UNAUTHENTICATED, "Missing or malformed AgentGraph-Signature header"
        )
    if abs(now - timestamp) > tolerance:
        raise AppError(ErrorCode.UNAUTHENTICATED, "Signature timestamp outside the tolerance")
    signed = f"{timestamp}.".encode() + body
    expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    if not any(hmac.compare_digest(expected, candidate) for candidate in candidates):
        raise AppError(ErrorCode.UNAUTHENTICATED, "Invalid signature")
    return hashlib.sha256(signed).hexdigest()


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The signature header a sender sends (for clients and tests)."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    signed = f"{timestamp}.".encode() + body
    return f"t={timestamp},v1={hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()}"


async def _check_rate(settings: Settings, redis: ArqRedis, trigger_id: uuid.UUID) -> None:
    window = int(time.time() // RATE_WINDOW_SECONDS)
    key = f"{settings.REDIS_PREFIX}ratelimit:trigger:{trigger_id}:{window}"
    pipe = redis.pipeline(transaction=False)
    pipe.incr(key)
    pipe.expire(key, RATE_WINDOW_SECONDS * 2)
    used, _ = await pipe.execute()
    limit = settings.TRIGGER_RATE_LIMIT_PER_MINUTE
    if used > limit:
        retry_after = RATE_WINDOW_SECONDS - int(time.time()) % RATE_WINDOW_SECONDS
        raise AppError(
            ErrorCode.RATE_LIMITED,
            f"More than {limit} deliveries a minute to this trigger; retry in {retry_after} s",
            retryAfterSeconds=retry_after,
        )


def _parse_payload(body: bytes) -> tuple[Any, str | None]:
    """The JSON body, or the reason it cannot be a payload."""
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        return None, "The body is not JSON"
    unstorable = first_unstorable(payload)
    if unstorable is not None:
        problem, path = unstorable
        return None, f"The body cannot be stored: {problem} ({path})"
    return payload, None


async def deliver(
    settings: Settings,
    redis: ArqRedis,
    publisher: EventPublisher,
    live: LiveTrigger,
    body: bytes,
    headers: dict[str, str],
) -> DeliveryResult:
    """Check a delivery and start its run (raises AppError for the unrecorded refusals)."""
    trigger = live.trigger
    try:
        secret = secret_box(settings).decrypt(trigger.encrypted_secret)
    except SecretUnreadable:
        log.error("trigger %s: its secret cannot be decrypted with the configured keys", trigger.id)
        raise AppError(ErrorCode.INTERNAL, "This trigger cannot verify deliveries") from None
    digest = signed_digest(
        secret,
        headers.get(SIGNATURE_HEADER),
        body,
        time.time(),
        settings.TRIGGER_SIGNATURE_TOLERANCE_SECONDS,
    )
    await _check_rate(settings, redis, trigger.id)
    given_id = headers.get(DELIVERY_ID_HEADER)
    if given_id is not None and not _DELIVERY_ID.fullmatch(given_id):
        raise AppError(
            ErrorCode.BAD_USER_INPUT,
            "AgentGraph-Delivery-Id must be 1 to 200 of A-Z a-z 0-9 . _ : -",
        )
    delivery_id = given_id or f"sig-{digest}"
    payload, problem = _parse_payload(body)
    attempt = _Attempt(settings, redis, publisher, live, payload, problem)
    try:
        async with in_transaction():
            delivery = await TriggerDelivery.create(
                id=uuid.uuid4(),
                trigger_id=trigger.id,
                delivery_id=delivery_id,
                signature_digest=digest,
                status=TriggerDeliveryStatus.ACCEPTED,
            )
            rejection = await attempt.run(delivery)
    except IntegrityError:
        return await _replayed(attempt, delivery_id, digest)
    await attempt.after_commit.run()
    return _answer(delivery, rejection)


@dataclass
class _Attempt:
    """One try at starting a delivery's run, inside the caller's transaction."""

    settings: Settings
    redis: ArqRedis
    publisher: EventPublisher
    live: LiveTrigger
    payload: Any
    problem: str | None
    after_commit: AfterCommit = field(default_factory=AfterCommit)

    async def run(self, delivery: TriggerDelivery) -> AppError | None:
        """Starts the run and records the outcome on `delivery`; the rejection, if any."""
        trigger = self.live.trigger
        rejection = AppError(ErrorCode.BAD_USER_INPUT, self.problem) if self.problem else None
        if rejection is None:
            try:
                execution = await executions.execute_graph(
                    self.settings,
                    DeferredQueue(self.after_commit, self.redis),  # type: ignore[arg-type]
                    DeferredPublisher(self.after_commit, self.publisher),  # type: ignore[arg-type]
                    trigger.user_id,  # type: ignore[attr-defined]
                    str(self.live.graph.graph_id),
                    self.live.graph.version,
                    {},
                    {},
                    GraphSource.WEBHOOK,
                    preset_id=str(trigger.preset_id) if trigger.preset_id else None,  # type: ignore[attr-defined]
                    node_inputs={str(self.live.node.id): {WEBHOOK_PAYLOAD_PIN: self.payload}},
                )
                delivery.execution_id = execution.id
            except AppError as exc:
                rejection = exc
        delivery.status = (
            TriggerDeliveryStatus.REJECTED if rejection else TriggerDeliveryStatus.ACCEPTED
        )
        delivery.error = rejection.message if rejection else None
        await delivery.save(update_fields=["status", "execution_id", "error"])
        return rejection


def _answer(delivery: TriggerDelivery, rejection: AppError | None) -> DeliveryResult:
    if rejection is not None:
        return DeliveryResult(
            HTTP_STATUS[rejection.code],
            {
                "error": rejection.code.value,
                "message": rejection.message,
                "deliveryId": delivery.delivery_id,
            },
            "rejected",
        )
    return DeliveryResult(
        202,
        {
            "status": TriggerDeliveryStatus.ACCEPTED.value,
            "deliveryId": delivery.delivery_id,
            "executionId": str(delivery.execution_id),
        },
        "accepted",
    )


async def _replayed(attempt: _Attempt, delivery_id: str, digest: str) -> DeliveryResult:
    """A delivery seen before. One that started its run answers DUPLICATE with that
    run; one that was REJECTED is tried again (a sender retries what failed, e.g.
    after the owner topped up), under its row lock so concurrent retries start one run."""
    async with in_transaction():
        original = (
            await TriggerDelivery.filter(
                Q(delivery_id=delivery_id) | Q(signature_digest=digest),
                trigger_id=attempt.live.trigger.id,
            )
            .order_by("received_at", "id")
            .select_for_update()
            .first()
        )
        if original is None:  # pruned meanwhile
            return DeliveryResult(
                200,
                {"status": "DUPLICATE", "deliveryId": delivery_id, "executionId": None},
                "duplicate",
            )
        await TriggerDelivery.filter(id=original.id).update(attempts=F("attempts") + 1)
        retried = original.status == TriggerDeliveryStatus.REJECTED
        rejection = await attempt.run(original) if retried else None
    if retried:
        await attempt.after_commit.run()
        return _answer(original, rejection)
    return DeliveryResult(
        200,
        {
            "status": "DUPLICATE",
            "deliveryId": original.delivery_id,
            "executionId": str(original.execution_id) if original.execution_id else None,
        },
        "duplicate",
    )
