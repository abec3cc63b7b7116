"""A per-user cache of `graphs` responses (issue 14), in Redis through aiocache.

A page of 50 graphs of 20 nodes costs ~60 ms of CPU to build, and clients ask
for the same page again and again while nothing changed. A response is kept
with its user's *generation*, a random token that every write to the user's
graphs (create, update, delete, activate a version, library entries and
settings) replaces after its transaction commits: entries of older generations
are never read again and lapse after GRAPHS_CACHE_SECONDS. A reader takes the
generation before it reads the database, so what it stores can only be older
than a write whose new token it did not see, and that token already retired
the generation it stored with. Tokens never come back (a counter that lapsed with
its key counted through the same numbers again, reaching entries cached before
the lapse). Redis away: no cache (reads go to the database), and a bump that
could not be made leaves entries at most GRAPHS_CACHE_SECONDS old.

An entry is the whole response body (`{"data": …}`), compressed once when
stored, behind the generation it was built under (one key per user, request
and encoding: a later store replaces it). Two encodings are kept: zstd, for
the clients that take it (browsers since 2024, httpx with zstandard): ~6x
smaller than the JSON and ~7x faster to inflate than gzip; and gzip for every
other client (a page of 50 graphs: 316 KB of JSON, 52 KB zstd, 60 KB gzip;
inflated in 0.12 ms and 0.9 ms). One MGET reads the user's generation and the
entry together; an entry of another generation is a miss.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import logging
import uuid
from typing import Any

import orjson
import zstandard
from aiocache import Cache
from aiocache.serializers import BaseSerializer

from app.blocks.registry import code_version
from app.services.blocks import _redis_location
from app.settings import Settings, get_settings

log = logging.getLogger(__name__)


# Built once per miss (316 KB: zstd ~0.7 ms, gzip ~5.7 ms), sent on every hit.
GZIP_LEVEL = 6
ZSTD_LEVEL = 3
ENCODINGS = ("zstd", "gzip")
# A generation token's length (uuid4 hex), the head of every entry.
TOKEN_LENGTH = 32


# One for the process: compress() runs whole on the event loop's thread, never
# two at once (a compressor is not thread-safe).
_ZSTD = zstandard.ZstdCompressor(level=ZSTD_LEVEL)


class _JsonBytes(BaseSerializer):
    """Values go in as JSON (bytes as they are) and come out as the stored
    bytes: a hit is sent as it is, never decoded and encoded again."""

    DEFAULT_ENCODING = None

    def dumps(self, value: Any) -> bytes:
        return value if isinstance(value, bytes) else orjson.dumps(value)

    def loads(self, value: bytes | None) -> bytes | None:
        return value


class GraphsCache:
    def __init__(self, settings: Settings) -> None:
        host, port, db = _redis_location(settings)
        self.seconds = settings.GRAPHS_CACHE_SECONDS
        self.user_bytes = settings.GRAPHS_CACHE_USER_BYTES
        # Settings shape answers too (which blocks are disabled, which credentials
        # a graph needs): processes configured otherwise never share entries.
        self._settings_version = hashlib.sha256(settings.model_dump_json().encode()).hexdigest()
        self._cache = Cache(
            Cache.REDIS,
            endpoint=host,
            port=port,
            db=db,
            namespace=f"{settings.REDIS_PREFIX}graphs-cache:",
            serializer=_JsonBytes(),
        )

    def request_key(
        self, schema_version: str, text: str, operation_name: str | None, variables: Any
    ) -> str:
        """The request's identity: its text, operation and variables, and the
        schema's and blocks' versions and the settings (another release or
        configuration may answer the same request differently)."""
        raw = orjson.dumps(
            [
                schema_version,
                code_version(),
                self._settings_version,
                text,
                operation_name,
                variables,
            ]
        )
        return hashlib.sha256(raw).hexdigest()

    async def lookup(
        self, user_id: uuid.UUID, request_key: str, encoding: str = "gzip"
    ) -> tuple[bytes | None, str | None]:
        """(the cached response body, compressed in `encoding` (ENCODINGS), or
        None; the generation to store a miss under); (None, None) when Redis
        does not answer."""
        if not self.seconds:
            return None, None
        try:
            # asyncio.timeout rather than aiocache's own (asyncio.wait_for, a
            # task and a loop turn more on every hit); the same limit.
            async with asyncio.timeout(self._cache.timeout):
                found, entry = await self._cache.multi_get(
                    [f"gen:{user_id}", f"{user_id}:{request_key}:{encoding}"], timeout=None
                )
            generation = orjson.loads(found) if found is not None else None
            if generation is None:
                generation = await self._new_generation(user_id)
        except Exception:
            log.warning("graphs cache unavailable", exc_info=True)
            return None, None
        if entry is not None and entry[:TOKEN_LENGTH] == generation.encode():
            return entry[TOKEN_LENGTH:], generation
        return None, generation

    async def _new_generation(self, user_id: uuid.UUID) -> str:
        # None yet, or lapsed: a fresh token (never one whose entries may still
        # live); a concurrent reader's or writer's token wins.
        key = f"gen:{user_id}"
        with contextlib.suppress(ValueError):
            await self._cache.add(key, uuid.uuid4().hex, ttl=self._generation_seconds)
        found = await self._cache.get(key)
        if found is None:
            raise RuntimeError("graphs cache generation lapsed at once")
        return orjson.loads(found)

    @property
    def _generation_seconds(self) -> int:
        # Outlives the entries stored under it (only to save memory: a lapsed
        # generation is replaced by a new token, never read again).
        return self.seconds * 2 + 60

    async def store(self, user_id: uuid.UUID, generation: str, request_key: str, data: Any) -> None:
        """Kept unless the user's entries of this generation would pass
        GRAPHS_CACHE_USER_BYTES of JSON (a query varied by a comment is another
        entry: without a budget one user could fill Redis at the rate
        responses are built)."""
        data_json = orjson.dumps(data)
        budget = f"bytes:{user_id}:{generation}"
        try:
            used = await self._cache.increment(budget, len(data_json))
            if used == len(data_json):  # the first entry: the budget lapses with the entries
                await self._cache.expire(budget, self.seconds)
            if used > self.user_bytes:
                return
            body = b'{"data":' + data_json + b"}"
            token = generation.encode()
            entries = [
                (f"{user_id}:{request_key}:zstd", token + _ZSTD.compress(body)),
                (f"{user_id}:{request_key}:gzip", token + gzip.compress(body, GZIP_LEVEL, mtime=0)),
            ]
            await self._cache.multi_set(entries, ttl=self.seconds)
        except Exception:
            log.warning("graphs cache unavailable", exc_info=True)

    async def changed(self, user_id: uuid.UUID) -> None:
        """After a committed write to the user's graphs: retire what was cached."""
        if not self.seconds:
            return
        try:
            await self._cache.set(f"gen:{user_id}", uuid.uuid4().hex, ttl=self._generation_seconds)
        except Exception:
            log.warning("graphs cache generation not bumped", exc_info=True)

    async def aclose(self) -> None:
        await self._cache.close()


# One per process and Redis prefix: services that write graphs reach it without
# being handed a connection (app/runtime.py closes them).
_caches: dict[tuple[str, str], GraphsCache] = {}


def graphs_cache(settings: Settings | None = None) -> GraphsCache:
    settings = settings or get_settings()
    key = (settings.REDIS_URL, settings.REDIS_PREFIX)
    found = _caches.get(key)
    if found is None:
        found = _caches[key] = GraphsCache(settings)
    return found


async def graphs_changed(user_id: uuid.UUID) -> None:
    await graphs_cache().changed(user_id)


async def close_graphs_caches() -> None:
    while _caches:
        await _caches.popitem()[1].aclose()
