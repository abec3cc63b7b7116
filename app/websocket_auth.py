"""Credentials on open websockets (issue 13): a socket signs in once, in its
connection_init, but its key may be revoked or suspended and its token may
expire while it stays open. Every operation it starts re-checks them
(app/websocket_limits.py), and this watch re-checks every open socket every
RECHECK_SECONDS, so a long subscription ends too: the socket is closed with
4403. A key's status is read at most API_KEY_STATUS_SECONDS late in any API
process, so revoking a key closes its sockets everywhere within about four
seconds.

One task per API process walks all sockets, rather than a timer per socket
(memory and wake-ups for a thousand subscribers); it runs only while some
socket is open, and the app's lifespan cancels it at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol

log = logging.getLogger(__name__)

RECHECK_SECONDS = 2.0
FORBIDDEN = 4403


class WatchedSocket(Protocol):
    connection_acknowledged: bool

    async def credentials_still_valid(self) -> bool: ...

    async def close_forbidden(self) -> None: ...


class CredentialWatch:
    def __init__(self, interval: float = RECHECK_SECONDS) -> None:
        self.interval = interval
        self._sockets: set[WatchedSocket] = set()
        self._task: asyncio.Task | None = None

    def add(self, socket: WatchedSocket) -> None:
        self._sockets.add(socket)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._watch())

    def discard(self, socket: WatchedSocket) -> None:
        self._sockets.discard(socket)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _watch(self) -> None:
        while self._sockets:
            await asyncio.sleep(self.interval)
            for socket in list(self._sockets):
                if not socket.connection_acknowledged:
                    continue  # not signed in yet: its init timeout applies
                try:
                    valid = await socket.credentials_still_valid()
                except Exception:
                    log.exception("could not re-check a websocket's credentials")
                    continue  # the database may be back at the next round
                if not valid:
                    self._sockets.discard(socket)
                    await socket.close_forbidden()
