"""The rate limit for requests that prove no one (SEMANTICS.md §11, issue 13).

A GraphQL request or websocket handshake without credentials, or with
credentials that fail, counts against its client address:
ANONYMOUS_RATE_LIMIT_PER_MINUTE in a fixed clock-minute window in Redis,
shared by every API process. Past it the request is answered 429 before its
body is read. Introspection is open to anyone and costs only CPU, so an
anonymous request that resolved many introspection fields counts as one
request more per INTROSPECTION_FIELDS_PER_REQUEST of them (GraphiQL's full
introspection of this schema counts as about nine). An address found over
its limit is remembered in this process until its window ends, so a flood
costs no Redis round trip per request.

A websocket handshake carries no credentials from a browser (it signs in
with connection_init), so it is counted like any anonymous request and the
count is taken back once the socket signs in: what counts is sockets that
never sign in, not every signed-in browser behind one address.

The client address is the TCP peer, or with CLIENT_IP_HEADER the header the
deployment's proxy sets (for X-Forwarded-For the last address of its last
line, the one the proxy itself added; the others may be forged by the
client). IPv6
addresses count by their /64 network, which one client usually holds whole.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import time

from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.datastructures import Headers
from starlette.types import Scope

from app.settings import Settings

log = logging.getLogger(__name__)

WINDOW_SECONDS = 60
INTROSPECTION_FIELDS_PER_REQUEST = 1000
# Addresses remembered as over their limit; a flood of distinct ones only evicts.
_BLOCKED_KEPT = 10_000


def client_address(scope: Scope, settings: Settings) -> str:
    raw = None
    if settings.CLIENT_IP_HEADER:
        # Every line of the header, in order: a proxy may add its own line
        # after the client's instead of appending to it, and the first line
        # is then the client's to forge.
        lines = Headers(scope=scope).getlist(settings.CLIENT_IP_HEADER)
        if lines:
            raw = ",".join(lines).split(",")[-1].strip()
    if not raw:
        peer = scope.get("client")
        raw = peer[0] if peer else "unknown"
    try:
        address = ipaddress.ip_address(raw)
    except ValueError:
        return raw[:64]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


class AnonymousRateLimit:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.limit = settings.ANONYMOUS_RATE_LIMIT_PER_MINUTE
        self._blocked: dict[str, float] = {}
        self._warned_at = 0.0

    async def retry_after(self, redis: Redis, address: str, now: float | None = None) -> int | None:
        """None when this request may go on, else the seconds until it may."""
        now = time.time() if now is None else now
        blocked_until = self._blocked.get(address)
        if blocked_until is not None:
            if blocked_until > now:
                return int(blocked_until - now) + 1
            del self._blocked[address]
        return await self._count(redis, address, 1, now)

    async def refund(self, redis: Redis, address: str, counted_at: float) -> None:
        """Takes back one request counted at `counted_at`: a websocket handshake
        (browsers cannot send credentials with it) whose socket then signed in
        with its connection_init."""
        window = int(counted_at // WINDOW_SECONDS)
        key = f"{self.settings.REDIS_PREFIX}ratelimit:anonymous:{address}:{window}"
        pipe = redis.pipeline(transaction=False)
        pipe.decr(key)
        pipe.expire(key, WINDOW_SECONDS * 2)
        with contextlib.suppress(RedisError):
            await pipe.execute()

    async def charge(self, redis: Redis, address: str, requests: int) -> None:
        """Counts a request that did the work of `requests` more (an anonymous
        introspection that resolved thousands of fields), so its address
        reaches the limit sooner."""
        if requests > 0:
            await self._count(redis, address, requests, time.time())

    async def _count(self, redis: Redis, address: str, requests: int, now: float) -> int | None:
        window_end = (now // WINDOW_SECONDS + 1) * WINDOW_SECONDS
        window = int(now // WINDOW_SECONDS)
        key = f"{self.settings.REDIS_PREFIX}ratelimit:anonymous:{address}:{window}"
        pipe = redis.pipeline(transaction=False)
        pipe.incrby(key, requests)
        pipe.expire(key, WINDOW_SECONDS * 2)
        try:
            used, _ = await pipe.execute()
        except RedisError:
            # Without Redis nothing can be counted; the request goes on rather
            # than every anonymous caller being refused (/health reports Redis).
            if now - self._warned_at > WINDOW_SECONDS:
                self._warned_at = now
                log.warning("anonymous rate limit not applied: Redis unavailable")
            return None
        if used <= self.limit:
            return None
        if len(self._blocked) >= _BLOCKED_KEPT:
            self._blocked.clear()
        self._blocked[address] = window_end
        return int(window_end - now) + 1
