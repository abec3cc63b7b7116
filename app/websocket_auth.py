"""Credentials on open connections (issue 13): a websocket signs in once, in
its connection_init, and an HTTP subscription stream with its request, but
the key may be revoked, suspended or lose a permission and the token may
expire while the connection stays open. Every operation a socket starts
re-checks them (app/websocket_limits.py), and this watch re-checks every open
socket and stream every RECHECK_SECONDS, so a long subscription ends too: a
socket is closed with 4403, a stream ends with the refusal as its last
result (`watched_stream`). A key's status is read at most
API_KEY_STATUS_SECONDS late in any API process, so revoking a key ends its
connections everywhere within about four seconds.

One task per API process walks all sockets, rather than a timer per socket
(memory and wake-ups for a thousand subscribers); it runs only while some
socket is open, and the app's lifespan cancels it at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")

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


class _WatchedStream:
    """An HTTP subscription stream as the watch sees it: signed in from its
    first byte; closing it means telling its reader why, then ending."""

    connection_acknowledged = True

    def __init__(self, refusal: Callable[[], Awaitable[Any]]) -> None:
        self._refusal = refusal
        self.refused: Any = None
        self.closed = asyncio.Event()

    async def credentials_still_valid(self) -> bool:
        self.refused = await self._refusal()
        return self.refused is None

    async def close_forbidden(self) -> None:
        self.closed.set()


async def watched_stream(
    watch: CredentialWatch,
    results: AsyncIterator[T],
    refusal: Callable[[], Awaitable[Any]],
    last_result: Callable[[Any], T],
) -> AsyncIterator[T]:
    """`results` while the credentials they were asked with hold (`refusal`
    answers None); once the watch finds they do not, `last_result(refusal)`
    and the end, whatever `results` was waiting for."""
    stream = _WatchedStream(refusal)
    watch.add(stream)
    ended = asyncio.ensure_future(stream.closed.wait())
    step: asyncio.Future | None = None
    try:
        while True:
            step = asyncio.ensure_future(anext(results))
            await asyncio.wait({step, ended}, return_when=asyncio.FIRST_COMPLETED)
            if not step.done():
                step.cancel()
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                    await step
                yield last_result(stream.refused)
                return
            try:
                result = step.result()
            except StopAsyncIteration:
                return
            yield result
    finally:
        ended.cancel()
        watch.discard(stream)
        if step is not None and not step.done():
            # The reader went away while `results` waited (for the next event):
            # end that wait first, or `results` could never be closed and would
            # hold its event feed for good.
            step.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration, Exception):
                await step
        with contextlib.suppress(Exception):
            await results.aclose()  # type: ignore[attr-defined]
