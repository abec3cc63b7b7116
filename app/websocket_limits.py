"""Caps and sign-in rules on live connections (SEMANTICS.md §11, issues 8 and
13): websockets per user on one API process, in-flight operations per
websocket, a deadline for connection_init on both protocols, and credentials
re-checked for every operation (and by app/websocket_auth.py meanwhile).

A refused connection closes with 4429 on graphql-transport-ws and answers a
`connection_error` with code RATE_LIMITED on legacy graphql-ws; a refused
subscription gets an `error` message whose extensions carry RATE_LIMITED.
Credentials that are missing, wrong, revoked, suspended or expired close the
socket with 4403 on both protocols (after a `connection_error` on legacy
graphql-ws when it happens at connection_init); no connection_init within
WEBSOCKET_INIT_TIMEOUT_SECONDS closes it with 4408.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter
from typing import Any

from starlette.websockets import WebSocketDisconnected as SocketClosed
from strawberry.exceptions import ConnectionRejectionError
from strawberry.http.exceptions import WebSocketDisconnected
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
)
from strawberry.subscriptions.protocols.graphql_ws.handlers import BaseGraphQLWSHandler
from strawberry.types.unset import UnsetType

from app.errors import ErrorCode
from app.websocket_auth import FORBIDDEN
from app.websocket_messages import INVALID_MESSAGE, legacy_ws_problem, transport_ws_problem

INIT_TIMEOUT = 4408


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

    def hold(self, context: Any, user_id: uuid.UUID) -> None:
        """The connection (its context) holds one slot of `user_id` from now on,
        or TooManyConnections; a slot it held for another user is given back."""
        if context.websocket_slot == user_id:
            return
        self.acquire(user_id)
        if context.websocket_slot is not None:
            self.release(context.websocket_slot)
        context.websocket_slot = user_id


class _SignedInSocket:
    """What both protocols' handlers share: the credential watch and re-checks."""

    async def handle(self) -> None:
        if self.context.slot_refusal is not None:
            # Signed in by its upgrade headers with no slot left (the view's get_context).
            await self.refuse_over_cap(self.context.slot_refusal)
            return
        watch = self.view.credential_watch
        watch.add(self)
        try:
            await super().handle()
        finally:
            watch.discard(self)

    async def credentials_still_valid(self) -> bool:
        return await self.context.credentials_still_valid()

    async def _refuse_if_signed_out(self) -> bool:
        """Before an operation starts: True (and the socket closed) when its
        credentials no longer hold."""
        if self.connection_acknowledged and not await self.credentials_still_valid():
            await self.close_forbidden()
            return True
        return False

    async def close_forbidden(self) -> None:
        await self.stop_operations()
        with contextlib.suppress(Exception):  # already closed by the client
            await self.websocket.close(code=FORBIDDEN, reason="Forbidden")


class LimitedTransportWSHandler(_SignedInSocket, BaseGraphQLTransportWSHandler):
    async def refuse_over_cap(self, reason: str) -> None:
        await self.websocket.close(code=4429, reason=reason)

    async def handle_message(self, message) -> None:
        problem = transport_ws_problem(message)
        if problem is not None:
            await self.handle_invalid_message(problem)  # 4400
            return
        await super().handle_message(message)

    async def handle_connection_init(self, message) -> None:
        try:
            await super().handle_connection_init(message)
        except TooManyConnections as refusal:
            await self.refuse_over_cap(str(refusal))
        if self.connection_init_received:
            # Cancelled by the init: strawberry kept the task (and its coroutine)
            # for the socket's life, ~1 KiB of each of a thousand subscribers.
            self.connection_init_timeout_task = None

    async def stop_operations(self) -> None:
        for operation_id in list(self.operations):
            await self.cleanup_operation(operation_id)

    async def handle_subscribe(self, message) -> None:
        if await self._refuse_if_signed_out():
            return
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


class LimitedLegacyWSHandler(_SignedInSocket, BaseGraphQLWSHandler):
    async def handle_message(self, message) -> None:
        problem = legacy_ws_problem(message)
        if problem is not None:
            await self.websocket.close(code=INVALID_MESSAGE, reason=problem)
            return
        await super().handle_message(message)

    async def handle_async_results(self, *args, **kwargs) -> None:
        # The client may leave while its operation's last message is sent
        # (strawberry's exception, or Starlette's once the socket is closed): the
        # operation's task then ends with nothing to report, not with a
        # traceback no one reads ("Task exception was never retrieved").
        with contextlib.suppress(WebSocketDisconnected, SocketClosed):
            await super().handle_async_results(*args, **kwargs)

    async def handle(self) -> None:
        # strawberry gives legacy graphql-ws no connection_init deadline.
        deadline = asyncio.create_task(self._close_unless_initialised())
        try:
            await super().handle()
        finally:
            deadline.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await deadline

    async def _close_unless_initialised(self) -> None:
        await asyncio.sleep(self.view.connection_init_wait_timeout.total_seconds())
        if not self.connection_acknowledged:
            with contextlib.suppress(Exception):
                await self.websocket.close(
                    code=INIT_TIMEOUT, reason="Connection initialisation timeout"
                )

    async def stop_operations(self) -> None:
        await self.cleanup()

    async def refuse_over_cap(self, reason: str) -> None:
        # graphql-ws can say why before the close.
        payload = {"code": ErrorCode.RATE_LIMITED.value, "message": reason}
        await self.send_message({"type": "connection_error", "payload": payload})
        await self.websocket.close(code=4429, reason=reason)

    async def handle_connection_init(self, message) -> None:
        # strawberry's own, but credentials refused close with 4403, not 1011.
        payload = message.get("payload")
        if payload is not None and not isinstance(payload, dict):
            await self.send_message({"type": "connection_error"})
            await self.websocket.close(code=1000, reason="")
            return
        self.context.connection_params = payload
        try:
            acknowledged = await self.view.on_ws_connect(self.context)
        except ConnectionRejectionError as rejection:
            await self.send_message({"type": "connection_error", "payload": rejection.payload})
            await self.websocket.close(code=FORBIDDEN, reason="Forbidden")
            return
        except TooManyConnections as refusal:
            await self.refuse_over_cap(str(refusal))
            return
        if isinstance(acknowledged, UnsetType) or acknowledged is None:
            await self.send_message({"type": "connection_ack"})
        else:
            await self.send_message({"type": "connection_ack", "payload": acknowledged})
        self.connection_acknowledged = True
        if self.keep_alive:
            self.keep_alive_task = asyncio.create_task(self.handle_keep_alive())

    async def handle_start(self, message) -> None:
        if await self._refuse_if_signed_out():
            return
        await super().handle_start(message)
