"""Caps on live connections (SEMANTICS.md §11 and issue 8): websockets per user
on one API process, and in-flight operations per websocket.

A refused connection closes with 4429 on graphql-transport-ws and answers a
`connection_error` with code RATE_LIMITED on legacy graphql-ws; a refused
subscription gets an `error` message whose extensions carry RATE_LIMITED.
"""

from __future__ import annotations

import uuid
from collections import Counter

from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
)
from strawberry.subscriptions.protocols.graphql_ws.handlers import BaseGraphQLWSHandler

from app.errors import ErrorCode


class TooManyConnections(Exception):
    pass


class ConnectionSlots:
    """Open websockets per user in this process."""

    def __init__(self, per_user: int) -> None:
        self.per_user = per_user
        self._open: Counter[uuid.UUID] = Counter()

    def acquire(self, user_id: uuid.UUID) -> None:
        if self._open[user_id] >= self.per_user:
            raise TooManyConnections(f"At most {self.per_user} websockets per user")
        self._open[user_id] += 1

    def release(self, user_id: uuid.UUID) -> None:
        self._open[user_id] -= 1
        if self._open[user_id] <= 0:
            del self._open[user_id]


class LimitedTransportWSHandler(BaseGraphQLTransportWSHandler):
    async def handle_connection_init(self, message) -> None:
        try:
            await super().handle_connection_init(message)
        except TooManyConnections as refusal:
            await self.websocket.close(code=4429, reason=str(refusal))

    async def handle_subscribe(self, message) -> None:
        limit = self.max_subscriptions_per_connection
        if (
            self.connection_acknowledged
            and message["id"] not in self.operations
            and limit is not None
            and len(self.operations) >= limit
        ):
            await self.send_message(
                {
                    "id": message["id"],
                    "type": "error",
                    "payload": [
                        {
                            "message": f"At most {limit} operations per connection",
                            "extensions": {"code": ErrorCode.RATE_LIMITED.value},
                        }
                    ],
                }
            )
            return
        await super().handle_subscribe(message)


class LimitedLegacyWSHandler(BaseGraphQLWSHandler):
    async def handle_connection_init(self, message) -> None:
        try:
            await super().handle_connection_init(message)
        except TooManyConnections as refusal:
            await self.send_message(
                {
                    "type": "connection_error",
                    "payload": {"code": ErrorCode.RATE_LIMITED.value, "message": str(refusal)},
                }
            )
            await self.websocket.close(code=1011, reason="")
