"""A small local stand-in for Stripe's HTTP API (Stripe cannot be reached here).

It answers the calls the product makes through the real SDK: customers,
Checkout Sessions, refunds, billing portal sessions, saved cards and
off-session PaymentIntents, charges, and disputes (close, evidence). It
honours `Idempotency-Key` the way Stripe does (same key, same answer) and
records every request, so tests can check what the product asked Stripe for.
Tests drive the other sides (paying a checkout, a bank's dispute and its
decision, a refund in the dashboard) through its Python methods and build real
signed webhook payloads with `event_payload` and `signed`.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import httpx
import stripe
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.harness import free_port

_counter = itertools.count(1)


def _id(prefix: str) -> str:
    return f"{prefix}_standin{next(_counter):06d}"


def decode_form(body: str) -> dict[str, Any]:
    """Stripe's bracketed form encoding (`a[b][0][c]=1`) back into nested dicts;
    list indexes stay as dict keys, which is all the stand-in needs."""
    result: dict[str, Any] = {}
    for raw_key, value in parse_qsl(body, keep_blank_values=True):
        parts = raw_key.replace("]", "").split("[")
        target = result
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = value
    return result


@dataclass
class Request_:
    method: str
    path: str
    params: dict[str, Any]
    idempotency_key: str | None


@dataclass
class StripeStandIn:
    port: int = field(default_factory=free_port)
    customers: dict[str, dict] = field(default_factory=dict)
    sessions: dict[str, dict] = field(default_factory=dict)
    charges: dict[str, dict] = field(default_factory=dict)
    intents: dict[str, dict] = field(default_factory=dict)
    refunds: dict[str, dict] = field(default_factory=dict)
    disputes: dict[str, dict] = field(default_factory=dict)
    requests: list[Request_] = field(default_factory=list)
    declining: set[str] = field(default_factory=set)
    # Where Stripe sends its events (set with `sending_events_to`), and the
    # HTTP statuses of what it sent.
    webhook: tuple[str, str] | None = None
    deliveries: list[int] = field(default_factory=list)
    _idempotent: dict[tuple[str, str], tuple[int, dict]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # ------------------------------------------------------------ the server

    def start(self) -> None:
        app = Starlette(
            routes=[
                Route("/v1/{path:path}", self._handle, methods=["GET", "POST", "DELETE"]),
            ]
        )
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("Stripe stand-in did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=5)

    async def _handle(self, request: Request) -> JSONResponse:
        body = (await request.body()).decode()
        params = decode_form(body) if body else dict(request.query_params)
        key = request.headers.get("idempotency-key")
        path = request.path_params["path"]
        with self._lock:
            self.requests.append(Request_(request.method, path, params, key))
            if key and (path, key) in self._idempotent:
                status, answer = self._idempotent[(path, key)]
                return JSONResponse(answer, status_code=status)
            status, answer = self._route(request.method, path.split("/"), params)
            if key and request.method == "POST":
                self._idempotent[(path, key)] = (status, answer)
        return JSONResponse(answer, status_code=status)

    def _route(self, method: str, parts: list[str], params: dict) -> tuple[int, dict]:
        match (method, parts):
            case ("POST", ["customers"]):
                return 200, self._new_customer(params)
            case ("GET", ["customers", cid, "payment_methods"]):
                if cid not in self.customers:
                    return _missing("customer", cid)
                cards = self.customers[cid]["cards"]
                return 200, {"object": "list", "data": cards[:1], "has_more": False}
            case ("POST", ["checkout", "sessions"]):
                return 200, self._new_session(params)
            case ("GET", ["checkout", "sessions", sid]):
                if sid not in self.sessions:
                    return _missing("checkout.session", sid)
                return 200, self.sessions[sid]
            case ("POST", ["refunds"]):
                status, refund = self._new_refund(params)
                if status == 200:
                    self._emit("refund.created", refund)
                return status, refund
            case ("POST", ["billing_portal", "sessions"]):
                if params.get("customer") not in self.customers:
                    return _missing("customer", params.get("customer"))
                sid = _id("bps")
                return 200, {
                    "id": sid,
                    "object": "billing_portal.session",
                    "customer": params["customer"],
                    "url": f"https://billing.stripe.test/session/{sid}",
                    "return_url": params.get("return_url"),
                }
            case ("POST", ["payment_intents"]):
                return self._off_session_charge(params)
            case ("GET", ["charges", chid]):
                if chid not in self.charges:
                    return _missing("charge", chid)
                return 200, self.charges[chid]
            case ("GET", ["refunds", rid]):
                if rid not in self.refunds:
                    return _missing("refund", rid)
                return 200, self.refunds[rid]
            case ("GET", ["disputes", did]):
                if did not in self.disputes:
                    return _missing("dispute", did)
                return 200, self.disputes[did]
            case ("POST", ["disputes", did, "close"]):
                return self._close_dispute(did)
            case ("POST", ["disputes", did]):
                return self._dispute_evidence(did, params)
        return 404, {"error": {"type": "invalid_request_error", "message": "Unknown route"}}

    # ------------------------------------------------------------ objects

    def _new_customer(self, params: dict) -> dict:
        cid = _id("cus")
        customer = {
            "id": cid,
            "object": "customer",
            "email": params.get("email"),
            "metadata": params.get("metadata", {}),
            "cards": [],
        }
        self.customers[cid] = customer
        return _public(customer)

    def _new_session(self, params: dict) -> dict:
        sid = _id("cs")
        item = params["line_items"]["0"]
        amount = int(item["price_data"]["unit_amount"]) * int(item.get("quantity", 1))
        session = {
            "id": sid,
            "object": "checkout.session",
            "mode": params.get("mode"),
            "customer": params.get("customer"),
            "amount_total": amount,
            "currency": item["price_data"]["currency"],
            "metadata": params.get("metadata", {}),
            "payment_intent": None,
            "payment_status": "unpaid",
            "status": "open",
            "url": f"https://checkout.stripe.test/c/pay/{sid}",
            "success_url": params.get("success_url"),
            "_intent_metadata": params.get("payment_intent_data", {}).get("metadata", {}),
        }
        self.sessions[sid] = session
        return _public(session)

    def _new_charge(self, customer: str | None, amount: int, metadata: dict) -> tuple[str, str]:
        intent_id, charge_id = _id("pi"), _id("ch")
        self.charges[charge_id] = {
            "id": charge_id,
            "object": "charge",
            "amount": amount,
            "customer": customer,
            "payment_intent": intent_id,
            "metadata": metadata,
            "paid": True,
            "status": "succeeded",
        }
        self.intents[intent_id] = {
            "id": intent_id,
            "object": "payment_intent",
            "amount": amount,
            "customer": customer,
            "latest_charge": charge_id,
            "metadata": metadata,
            "status": "succeeded",
        }
        return intent_id, charge_id

    def _new_refund(self, params: dict) -> tuple[int, dict]:
        intent = self.intents.get(params.get("payment_intent", ""))
        if intent is None:
            return _missing("payment_intent", params.get("payment_intent"))
        amount = int(params.get("amount", intent["amount"]))
        if intent.get("amount_refunded", 0) + amount > intent["amount"]:
            return 400, {
                "error": {
                    "type": "invalid_request_error",
                    "code": "charge_already_refunded",
                    "message": "The charge has already been refunded (in full or in part).",
                }
            }
        intent["amount_refunded"] = intent.get("amount_refunded", 0) + amount
        rid = _id("re")
        refund = {
            "id": rid,
            "object": "refund",
            "amount": amount,
            "charge": intent["latest_charge"],
            "payment_intent": intent["id"],
            "metadata": params.get("metadata", {}),
            "status": "succeeded",
        }
        self.refunds[rid] = refund
        return 200, refund

    def _close_dispute(self, did: str) -> tuple[int, dict]:
        dispute = self.disputes.get(did)
        if dispute is None:
            return _missing("dispute", did)
        if dispute["status"] not in ("needs_response", "warning_needs_response"):
            return 400, _invalid(f"This dispute is {dispute['status']} and cannot be closed.")
        dispute["status"] = "lost"
        return 200, dispute

    def _dispute_evidence(self, did: str, params: dict) -> tuple[int, dict]:
        dispute = self.disputes.get(did)
        if dispute is None:
            return _missing("dispute", did)
        if dispute["status"] not in ("needs_response", "warning_needs_response"):
            return 400, _invalid(f"This dispute is {dispute['status']}; evidence is closed.")
        dispute["evidence"].update(params.get("evidence", {}))
        if params.get("submit", "true") == "true":
            dispute["status"] = "under_review"
        return 200, dispute

    def _off_session_charge(self, params: dict) -> tuple[int, dict]:
        customer = self.customers.get(params.get("customer", ""))
        if customer is None:
            return _missing("customer", params.get("customer"))
        if params["customer"] in self.declining:
            return 402, {
                "error": {
                    "type": "card_error",
                    "code": "card_declined",
                    "message": "Your card was declined.",
                }
            }
        intent_id, _ = self._new_charge(
            params["customer"], int(params["amount"]), params.get("metadata", {})
        )
        return 200, self.intents[intent_id]

    # ------------------------------------------------------------ events

    @contextmanager
    def sending_events_to(self, url: str, secret: str) -> Iterator[None]:
        """Within the block, objects made through the API send their events the
        way Stripe does: signed, in the background, racing the API's answer."""
        self.webhook = (url, secret)
        self._senders: list[threading.Thread] = []
        try:
            yield
        finally:
            for sender in self._senders:
                sender.join(timeout=30)
            self.webhook = None

    def _emit(self, event_type: str, obj: dict) -> None:
        if self.webhook is None:
            return
        url, secret = self.webhook
        payload = event_payload(event_type, dict(obj))

        def send() -> None:
            response = httpx.post(url, content=payload, headers=signed(payload, secret), timeout=30)
            with self._lock:
                self.deliveries.append(response.status_code)

        sender = threading.Thread(target=send, daemon=True)
        self._senders.append(sender)
        sender.start()

    # ------------------------------------------------------------ the customer's side

    def pay(self, session_id: str, *, asynchronous: bool = False) -> dict:
        """The customer completes the Checkout (its card is saved on the customer).
        `asynchronous`: completed but not yet paid (a bank debit)."""
        with self._lock:
            session = self.sessions[session_id]
            session["status"] = "complete"
            if asynchronous:
                session["payment_status"] = "unpaid"
                return _public(session)
            return self._settle(session)

    def settle(self, session_id: str) -> dict:
        """An asynchronous payment succeeds later."""
        with self._lock:
            return self._settle(self.sessions[session_id])

    def _settle(self, session: dict) -> dict:
        if session["payment_intent"] is None:
            intent_id, _ = self._new_charge(
                session["customer"], session["amount_total"], session["_intent_metadata"]
            )
            session["payment_intent"] = intent_id
            customer = self.customers.get(session["customer"])
            if customer is not None and not customer["cards"]:
                customer["cards"].append(
                    {"id": _id("pm"), "object": "payment_method", "type": "card"}
                )
        session["payment_status"] = "paid"
        return _public(session)

    def dispute(self, charge_id: str, amount: int | None = None) -> dict:
        """The card holder disputes a charge with their bank."""
        with self._lock:
            charge = self.charges[charge_id]
            did = _id("dp")
            self.disputes[did] = {
                "id": did,
                "object": "dispute",
                "amount": amount if amount is not None else charge["amount"],
                "charge": charge_id,
                "payment_intent": charge["payment_intent"],
                "currency": "usd",
                "metadata": {},
                "reason": "fraudulent",
                "status": "needs_response",
                "evidence": {},
            }
            return dict(self.disputes[did])

    def bank_decides(self, dispute_id: str, status: str) -> dict:
        """The bank closes a dispute: won (for us) or lost."""
        with self._lock:
            self.disputes[dispute_id]["status"] = status
            return dict(self.disputes[dispute_id])

    def dashboard_refund(self, payment_intent: str, amount: int) -> dict:
        """Someone refunds a payment in Stripe's dashboard (no metadata of ours)."""
        with self._lock:
            status, refund = self._new_refund({"payment_intent": payment_intent, "amount": amount})
            assert status == 200, refund
            return refund

    def charge_of(self, session_id: str) -> dict:
        return self.charges[
            self.intents[self.sessions[session_id]["payment_intent"]]["latest_charge"]
        ]

    def calls(self, path: str, method: str = "POST") -> list[Request_]:
        return [r for r in self.requests if r.path == path and r.method == method]


def _public(obj: dict) -> dict:
    return {k: v for k, v in obj.items() if not k.startswith("_") and k != "cards"}


def _invalid(message: str) -> dict:
    return {"error": {"type": "invalid_request_error", "message": message}}


def _missing(kind: str, ident: Any) -> tuple[int, dict]:
    return 404, {
        "error": {
            "type": "invalid_request_error",
            "code": "resource_missing",
            "message": f"No such {kind}: '{ident}'",
        }
    }


def event_payload(event_type: str, obj: dict, event_id: str | None = None) -> str:
    return json.dumps(
        {
            "id": event_id or _id("evt"),
            "object": "event",
            "api_version": stripe.api_version,
            "created": int(time.time()),
            "livemode": False,
            "type": event_type,
            "data": {"object": obj},
        }
    )


def signed(payload: str, secret: str, timestamp: int | None = None) -> dict[str, str]:
    """Headers Stripe would send with this payload."""
    header = stripe.WebhookSignature.generate_signature_header(
        payload, secret, timestamp=timestamp or int(time.time())
    )
    return {"Stripe-Signature": header, "Content-Type": "application/json"}
