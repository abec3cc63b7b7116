"""Servers of their own for the socket attack tests (tests/sockets/)."""

from __future__ import annotations

import uuid

import pytest

from tests.conftest import TEST_ENV
from tests.harness import (
    ApiServer,
    GraphQLClient,
)
from tests.sockets.helpers import _LOG_MARKS, ME


@pytest.fixture(autouse=True)
def _mark_logs(request):
    for name in ("capped", "strict", "api"):
        if name in request.fixturenames:
            server = request.getfixturevalue(name)
            _LOG_MARKS[id(server)] = len(server.log())


@pytest.fixture(scope="module")
async def capped(database):
    """A server of its own: two sockets per user, three operations per socket,
    one second to send connection_init."""
    env = {
        "MAX_WEBSOCKETS_PER_USER": "2",
        "MAX_OPERATIONS_PER_WEBSOCKET": "3",
        "WEBSOCKET_INIT_TIMEOUT_SECONDS": "1",
        "MUTATION_RATE_LIMIT_PER_MINUTE": "5",
        "LOG_LEVEL": "WARNING",
    }
    async with ApiServer(TEST_ENV, env) as server:
        yield server


@pytest.fixture
async def capped_user(capped, new_user):
    person = new_user()
    client = GraphQLClient(capped.base_url)
    try:
        await client.ok(ME, token=person.token)
    finally:
        await client.aclose()
    return person


@pytest.fixture(scope="module")
async def strict(database):
    """A server whose address may make three anonymous requests a minute."""
    env = {
        "ANONYMOUS_RATE_LIMIT_PER_MINUTE": "3",
        "REDIS_PREFIX": TEST_ENV["REDIS_PREFIX"] + f"anon-{uuid.uuid4().hex[:6]}:",
        "WEBSOCKET_INIT_TIMEOUT_SECONDS": "1",
    }
    async with ApiServer(TEST_ENV, env) as server:
        yield server
