"""Disputes, decided through Stripe as the seed's `handle_dispute` does.

On `charge.dispute.created`: when the user's balance minus the disputed
amount stays at least DISPUTE_ACCEPT_MIN_BALANCE, we accept (Stripe's
Dispute.close; the dispute is then lost) and deduct the credits at once;
otherwise we contest it with evidence (Dispute.modify with the top-up and
what the user did with its credits) and deduct only if it is lost
(`charge.dispute.closed`, status lost).

A `disputes` row per Stripe dispute holds the decision, made once (a
conditional update), whether Stripe has our answer, and how it closed. The
deduction is one ledger row keyed by the dispute (accepting and losing share
the key), so replays, concurrent deliveries and every order of the two events
change the ledger once:

- created, then closed lost: deducted once (at the accept, or at the loss);
- closed lost before created: deducted at the loss; created then does nothing;
- closed won (before or after created): nothing is deducted (and a deduction
  that somehow exists is given back, once).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from tortoise.exceptions import IntegrityError

from app.clock import utcnow
from app.models import (
    CreditTransaction,
    CreditTransactionType,
    Dispute,
    DisputeDecision,
    NotificationType,
    User,
)
from app.services import credits, ledger
from app.services.notifications import NewNotification, Notifier
from app.services.refunds import top_up_paid_by
from app.settings import Settings

log = logging.getLogger(__name__)

# Stripe limits each evidence text field; the history is cut to fit.
EVIDENCE_FIELD_LIMIT = 20_000
EVIDENCE_ROWS = 500


@dataclass(frozen=True)
class DisputeFacts:
    """What a dispute event says, checked by the webhook before it gets here."""

    id: str
    owner: uuid.UUID
    amount: int
    payment_intent: str | None


def deduction_key(dispute_id: str) -> str:
    return f"dispute:{dispute_id}"


async def _row(facts: DisputeFacts) -> Dispute:
    try:
        row, _ = await Dispute.get_or_create(
            id=facts.id,
            defaults={
                "user_id": facts.owner,
                "amount": facts.amount,
                "payment_intent": facts.payment_intent,
            },
        )
    except IntegrityError:  # its other event created it at the same moment
        row = await Dispute.get(id=facts.id)
    return row


async def dispute_created(settings: Settings, notifier: Notifier, facts: DisputeFacts) -> str:
    """Decide once and give Stripe our answer; returns what was done."""
    row = await _row(facts)
    if row.closed_status is not None:
        return f"already closed ({row.closed_status})"
    if row.answered_at is not None:
        return f"already answered ({row.decision})"
    decision = row.decision
    if decision is None:
        balance = await ledger.get_balance(facts.owner)
        decision = (
            DisputeDecision.ACCEPTED
            if balance - facts.amount >= settings.DISPUTE_ACCEPT_MIN_BALANCE
            else DisputeDecision.CONTESTED
        )
        if not await Dispute.filter(id=facts.id, decision=None).update(decision=decision):
            await row.refresh_from_db()  # decided by a concurrent delivery
            decision = row.decision
    gw = credits.gateway(settings)
    # Both calls carry an idempotency key per dispute: a retry, or a concurrent
    # delivery, gets Stripe's first answer again.
    if decision == DisputeDecision.ACCEPTED:
        await gw.close_dispute(facts.id)
        await _deduct(facts, "Dispute accepted: payment returned to the card")
    else:
        await gw.contest_dispute(facts.id, await dispute_evidence(facts))
    await Dispute.filter(id=facts.id).update(answered_at=utcnow(), updated_at=utcnow())
    await _notify_opened(notifier, facts, decision)
    log.warning(
        "dispute %s of %s for %d credits: %s", facts.id, facts.owner, facts.amount, decision
    )
    return str(decision)


async def dispute_closed(facts: DisputeFacts, status: str) -> str:
    await _row(facts)
    await Dispute.filter(id=facts.id).update(closed_status=status[:32], updated_at=utcnow())
    if status == "lost":
        await _deduct(facts, "Dispute lost: payment returned to the card")
        return "deducted"
    if status == "won":
        taken = await CreditTransaction.exists(key=deduction_key(facts.id), user_id=facts.owner)
        if taken:
            await ledger.record_transaction(
                facts.owner,
                facts.amount,
                CreditTransactionType.REFUND,
                key=f"dispute-won:{facts.id}",
                description="Dispute won: credits restored",
                metadata={"dispute": facts.id},
            )
            return "restored"
    return "nothing to do"


async def _deduct(facts: DisputeFacts, description: str) -> None:
    await ledger.record_transaction(
        facts.owner,
        -facts.amount,
        CreditTransactionType.REFUND,
        key=deduction_key(facts.id),
        # The money is gone already; the balance may have to go below zero.
        allow_negative=True,
        description=description,
        metadata={"dispute": facts.id},
    )


async def _notify_opened(notifier: Notifier, facts: DisputeFacts, decision: str) -> None:
    if decision == DisputeDecision.ACCEPTED:
        body = (
            f"Your bank disputed a payment of {facts.amount} credits. We accepted the "
            f"dispute: the money goes back to your card and {facts.amount} credits were "
            "taken from your balance."
        )
    else:
        body = (
            f"Your bank disputed a payment of {facts.amount} credits. We sent the bank "
            "what those credits were used for; if the bank decides for you, the credits "
            "are taken from your balance then."
        )
    await notifier.notify(
        facts.owner,
        NewNotification(
            type=NotificationType.DISPUTE_OPENED,
            key=f"dispute-opened:{facts.id}",
            title="A payment of yours was disputed",
            body=body,
            data={"disputeId": facts.id, "amount": facts.amount, "decision": str(decision)},
        ),
    )


async def dispute_evidence(facts: DisputeFacts) -> dict[str, str]:
    """The evidence Stripe passes to the bank: who bought the credits, when,
    and the ledger from that top-up on (what the credits were spent on)."""
    user = await User.get(id=facts.owner)
    top_up = (
        await top_up_paid_by(facts.owner, facts.payment_intent) if facts.payment_intent else None
    )
    rows = CreditTransaction.filter(user_id=facts.owner, is_active=True)
    if top_up is not None:
        rows = rows.filter(created_at__gte=top_up.created_at)
    history = await rows.order_by("created_at", "id").limit(EVIDENCE_ROWS)
    lines = [
        f"{row.created_at.strftime('%Y-%m-%d %H:%M:%S')} UTC  {row.type:<16} "
        f"{row.amount:+d} credits  balance {row.running_balance}  {row.description or ''}"
        for row in history
    ]
    used = -sum(r.amount for r in history if r.type == CreditTransactionType.USAGE)
    runs = len({r.usage_execution_id for r in history if r.usage_execution_id})
    bought = top_up.created_at.strftime("%Y-%m-%d") if top_up else "an earlier date"
    summary = (
        f"The customer ({user.email}) bought {facts.amount} prepaid credits (1 credit = "
        f"1 US cent) on {bought} for running automation agents on our platform. Since "
        f"then their account used {used} credits in {runs} agent runs; the attached "
        "activity log lists every credit movement from the purchase on."
    )
    evidence = {
        "product_description": "Prepaid agentgraph credits used to run automation agents",
        "customer_email_address": user.email,
        "uncategorized_text": summary[:EVIDENCE_FIELD_LIMIT],
        "access_activity_log": _fit("\n".join(lines) or "No activity recorded."),
    }
    if top_up is not None:
        evidence["service_date"] = top_up.created_at.strftime("%Y-%m-%d")
    return evidence


def _fit(text: str) -> str:
    if len(text) <= EVIDENCE_FIELD_LIMIT:
        return text
    return text[: EVIDENCE_FIELD_LIMIT - 20].rsplit("\n", 1)[0] + "\n… (cut)"
