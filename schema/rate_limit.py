"""Per-user rate limit on mutations (SEMANTICS.md §11), before any resolver runs.

A fixed one-minute window per user in Redis, shared by every API process.
Every root field of a mutation counts once, however it is reached: aliases,
fragments, inline fragments, and fields a directive might skip (the request
gate counts them on the document's outline). Queries and subscriptions are
not limited here.
"""

from __future__ import annotations

import time
from typing import Any

from app.errors import AppError, ErrorCode

WINDOW_SECONDS = 60


async def mutation_refusal(context: Any, root_fields: int) -> AppError | None:
    """RATE_LIMITED once the caller's mutations this minute pass the limit;
    None for anonymous or badly signed callers (their resolvers answer
    UNAUTHENTICATED)."""
    try:
        principal = await context.optional_principal()
    except AppError:
        return None
    if principal is None:
        return None
    settings = context.settings
    window = int(time.time() // WINDOW_SECONDS)
    key = f"{settings.REDIS_PREFIX}ratelimit:mutations:{principal.user_id}:{window}"
    pipe = context.services.redis.pipeline(transaction=False)
    pipe.incrby(key, max(1, root_fields))
    pipe.expire(key, WINDOW_SECONDS * 2)
    used, _ = await pipe.execute()
    limit = settings.MUTATION_RATE_LIMIT_PER_MINUTE
    if used <= limit:
        return None
    retry_after = WINDOW_SECONDS - int(time.time()) % WINDOW_SECONDS
    return AppError(
        ErrorCode.RATE_LIMITED,
        f"More than {limit} mutations a minute; try again in {retry_after} s",
        retryAfterSeconds=retry_after,
    )
