"""Running the GraphQL schema inside the test process, for what HTTP cannot show
(how many SQL queries a request makes). Uses this run's database and Redis."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from tortoise.backends.asyncpg.client import AsyncpgDBClient

from app.context import Context
from app.principal import Principal
from app.runtime import start_services
from app.settings import get_settings
from resolvers.loaders import Loaders
from resolvers.root import build_schema


class QueryCounter:
    def __init__(self) -> None:
        self.statements: list[str] = []


@asynccontextmanager
async def counting_queries(monkeypatch) -> AsyncIterator[QueryCounter]:
    counter = QueryCounter()
    for name in ("execute_query", "execute_query_dict"):
        original = getattr(AsyncpgDBClient, name)

        def wrapped(self, query, values=None, _original=original):
            counter.statements.append(query)
            return _original(self, query, values)

        monkeypatch.setattr(AsyncpgDBClient, name, wrapped)
    yield counter


@asynccontextmanager
async def schema_runner() -> AsyncIterator[Any]:
    settings = get_settings()
    services = await start_services(settings)
    schema = build_schema(settings)

    async def run(query: str, user_id: uuid.UUID, variables: dict | None = None):
        context = Context(request=None, response=None, services=services, loaders=Loaders())
        context.set_principal(Principal(user_id=user_id))
        return await schema.execute(query, variable_values=variables, context_value=context)

    try:
        yield run
    finally:
        await services.aclose()
