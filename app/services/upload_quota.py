"""Per-user limits on uploads (issue 13): how many a minute
(UPLOAD_RATE_LIMIT_PER_MINUTE) and how many bytes a UTC day
(UPLOAD_QUOTA_MB_PER_DAY, MiB), both in Redis and shared by every API process.

Bytes count as they arrive, whether the upload then succeeds or not: they
cost the server either way. A body that would pass the day's quota stops the
moment it does. Both answer 429 with RATE_LIMITED.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

from redis.asyncio import Redis

from app.errors import ErrorCode
from app.services.files import MIB, UploadError
from app.settings import Settings

MINUTE, DAY = 60, 86_400


def _refusal(message: str) -> UploadError:
    return UploadError(429, ErrorCode.RATE_LIMITED, message)


class UploadQuota:
    def __init__(self, settings: Settings, redis: Redis, user_id: uuid.UUID) -> None:
        self.settings = settings
        self.redis = redis
        now = time.time()
        prefix = f"{settings.REDIS_PREFIX}uploads:{user_id}"
        self.rate_key = f"{prefix}:count:{int(now // MINUTE)}"
        self.bytes_key = f"{prefix}:bytes:{int(now // DAY)}"
        self.quota = settings.UPLOAD_QUOTA_MB_PER_DAY * MIB

    async def admit(self, declared_bytes: int | None) -> None:
        """Count this upload against the per-minute limit and refuse it when the
        day's quota is spent or its declared file size (the body less room for
        the multipart framing) could not fit."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.incr(self.rate_key)
        pipe.expire(self.rate_key, 2 * MINUTE)
        pipe.get(self.bytes_key)
        uploads, _, used = await pipe.execute()
        limit = self.settings.UPLOAD_RATE_LIMIT_PER_MINUTE
        if uploads > limit:
            raise _refusal(f"More than {limit} uploads a minute; try again shortly")
        used = int(used or 0)
        if used >= self.quota or used + max(declared_bytes or 0, 0) > self.quota:
            raise self._over_quota()

    def _over_quota(self) -> UploadError:
        return _refusal(
            f"Daily upload quota of {self.settings.UPLOAD_QUOTA_MB_PER_DAY} MiB reached; "
            "try again tomorrow (UTC)"
        )

    async def metered(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """`chunks`, each counted against the day's quota before it goes on."""
        async for chunk in chunks:
            pipe = self.redis.pipeline(transaction=False)
            pipe.incrby(self.bytes_key, len(chunk))
            pipe.expire(self.bytes_key, 2 * DAY)
            used, _ = await pipe.execute()
            if used > self.quota:
                raise self._over_quota()
            yield chunk
