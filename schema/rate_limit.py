"""Per-user rate limit on mutations (SEMANTICS.md §11), before any resolver runs.

A fixed one-minute window per user in Redis, shared by every API process.
Each root field of a mutation counts once, so aliasing thirty mutations into
one request costs thirty. Queries and subscriptions are not limited here.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from graphql import ExecutionResult, FieldNode, GraphQLError, OperationType
from strawberry.extensions import SchemaExtension

from app.errors import AppError, ErrorCode

WINDOW_SECONDS = 60


class MutationRateLimit(SchemaExtension):
    async def on_execute(self) -> AsyncIterator[None]:
        context = self.execution_context
        if context.operation_type.value == "mutation":
            refusal = await self._refusal()
            if refusal is not None:
                context.result = ExecutionResult(
                    data=None, errors=[GraphQLError(refusal.message, original_error=refusal)]
                )
        yield

    async def _refusal(self) -> AppError | None:
        ctx = self.execution_context.context
        try:
            principal = await ctx.optional_principal()
        except AppError:
            return None  # bad credentials: the resolvers answer UNAUTHENTICATED
        if principal is None:
            return None
        settings = ctx.settings
        window = int(time.time() // WINDOW_SECONDS)
        key = f"{settings.REDIS_PREFIX}ratelimit:mutations:{principal.user_id}:{window}"
        pipe = ctx.services.redis.pipeline(transaction=False)
        pipe.incrby(key, self._root_fields())
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

    def _root_fields(self) -> int:
        document = self.execution_context.graphql_document
        name = self.execution_context.operation_name
        for definition in document.definitions if document else ():
            if getattr(definition, "operation", None) is OperationType.MUTATION and (
                name is None or (definition.name and definition.name.value == name)
            ):
                selections = definition.selection_set.selections
                return max(1, sum(1 for s in selections if isinstance(s, FieldNode)))
        return 1
