"""The shape a websocket message must have before strawberry's handlers read it.

strawberry indexes messages as the protocols define them (`message["type"]`,
`payload["query"]`, an id as a dict key), so valid JSON of another shape (`null`,
a list, a string payload, an object as id) raised inside the handler: a
traceback in the log and a socket dropped with no close code. A message of the
wrong shape now closes its socket with 4400 and says what was wrong, on both
protocols, signed in or not.
"""

from __future__ import annotations

from typing import Any

INVALID_MESSAGE = 4400

# Message types whose `id` names an operation, per protocol.
_TRANSPORT_WS_IDS = frozenset({"subscribe", "complete", "next", "error"})
_LEGACY_WS_IDS = frozenset({"start", "stop"})


def transport_ws_problem(message: Any) -> str | None:
    """What is wrong with a graphql-transport-ws message's shape, or None."""
    return _problem(message, _TRANSPORT_WS_IDS, "subscribe")


def legacy_ws_problem(message: Any) -> str | None:
    """What is wrong with a (legacy) graphql-ws message's shape, or None."""
    return _problem(message, _LEGACY_WS_IDS, "start")


def _problem(message: Any, with_id: frozenset[str], operation: str) -> str | None:
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        return "A message must be a JSON object with a string type"
    kind = message["type"]
    if kind in with_id and not isinstance(message.get("id"), str):
        return f"{kind}: id must be a string"
    if kind == operation:
        return _payload_problem(kind, message.get("payload"))
    return None


def _payload_problem(kind: str, payload: Any) -> str | None:
    if not isinstance(payload, dict) or not isinstance(payload.get("query"), str):
        return f"{kind}: payload must be an object with a query string"
    if not isinstance(payload.get("variables") or {}, dict):
        return f"{kind}: variables must be an object"
    if not isinstance(payload.get("operationName") or "", str):
        return f"{kind}: operationName must be a string"
    if not isinstance(payload.get("extensions") or {}, dict):
        return f"{kind}: extensions must be an object"
    return None
