"""The stack's floor for `me` (issue 14): a minimal strawberry schema on the same
uvicorn options, with strawberry's own ParserCache and ValidationCache and one
asyncpg read of the user and their balance per request, no authentication.
Whatever `me` costs beyond this is ours. Run by bench/me_query.py in its own
process (`MeFloorServer`); not a benchmark itself (its name starts with `_`)."""

from __future__ import annotations

import sys
import uuid
from contextlib import asynccontextmanager

import strawberry

from bench.support import BareServer

FLOOR_SQL = (
    "SELECT u.id, u.email, b.balance FROM users u "
    "LEFT JOIN user_balances b ON b.user_id = u.id WHERE u.id = $1"
)


# The one user every request reads, and the pool (set by floor_app).
_served: dict = {}


@strawberry.type
class User:
    id: strawberry.ID
    email: str
    credits: int


@strawberry.type
class Query:
    @strawberry.field
    async def me(self) -> User:
        async with _served["pool"].acquire() as conn:
            row = await conn.fetchrow(FLOOR_SQL, _served["user_id"])
        return User(id=row["id"], email=row["email"], credits=row["balance"] or 0)


def floor_app(database_url: str, user_id: str):
    import asyncpg
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route
    from strawberry.asgi import GraphQL
    from strawberry.extensions import ParserCache, ValidationCache

    dsn = database_url.split("?", 1)[0].replace("postgres://", "postgresql://", 1)
    _served["user_id"] = uuid.UUID(user_id)

    schema = strawberry.Schema(
        query=Query, extensions=[ParserCache(maxsize=256), ValidationCache(maxsize=256)]
    )

    async def ok(request):
        return JSONResponse({"ok": True})

    @asynccontextmanager
    async def lifespan(app):
        _served["pool"] = await asyncpg.create_pool(dsn, min_size=1, max_size=10)
        yield
        await _served["pool"].close()

    return Starlette(
        routes=[Route("/ok", ok), Route("/graphql", GraphQL(schema), methods=["GET", "POST"])],
        lifespan=lifespan,
    )


def serve_floor(port: int, database_url: str, user_id: str) -> None:
    import uvicorn

    from app.cli import UVICORN_OPTIONS

    uvicorn.run(
        floor_app(database_url, user_id),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        **UVICORN_OPTIONS,
    )


class MeFloorServer(BareServer):
    """`serve_floor` in its own process, started and stopped like the API."""

    def __init__(self, database_url: str, user_id: str) -> None:
        super().__init__()
        self.database_url, self.user_id = database_url, user_id

    def command(self) -> list[str]:
        code = (
            "import sys; from bench._me_floor import serve_floor; "
            "serve_floor(int(sys.argv[1]), sys.argv[2], sys.argv[3])"
        )
        return [sys.executable, "-c", code, str(self.port), self.database_url, self.user_id]
