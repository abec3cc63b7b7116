"""The test harness: real PostgreSQL, real Redis, a real uvicorn.

Each test run gets its own PostgreSQL database and Redis key prefix, and drops
both at the end. The API runs as a real `agentgraph serve` process on a free
port; tests talk to it over HTTP and websockets like any client, and read the
database directly only to check what did (or did not) change.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator

import pytest
from cryptography.fernet import Fernet


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


RUN_ID = uuid.uuid4().hex[:10]
# The local SMTP server (tests/smtp_stand_in.py) every process of the run mails to.
SMTP_PORT = _free_port()
PG_ADMIN_DSN = os.environ.get("TEST_PG_ADMIN_DSN", "postgres://postgres@127.0.0.1:5432/postgres")
PG_DATABASE = f"agentgraph_test_{RUN_ID}"
PG_URL = PG_ADMIN_DSN.rsplit("/", 1)[0] + f"/{PG_DATABASE}"
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

# The settings every process of this run shares (the test process and the
# servers it starts). Production mode, so the dev-secret refusal is live.
TEST_ENV = {
    "ENVIRONMENT": "production",
    # Ten or so processes share the server's 100 connections during the scale-out test.
    "DATABASE_URL": PG_URL + "?maxsize=8",
    "REDIS_URL": REDIS_URL,
    "REDIS_PREFIX": f"agentgraph-test-{RUN_ID}:",
    "JWT_SECRET": f"test-jwt-secret-{RUN_ID}-0123456789abcdef",
    "API_KEY_PEPPER": f"test-pepper-{RUN_ID}",
    "CREDENTIALS_ENCRYPTION_KEY": Fernet.generate_key().decode(),
    "STARTING_CREDITS": "250",
    "FRONTEND_BASE_URL": "https://app.example.test",
    "LOG_LEVEL": "WARNING",
    # Every test client is 127.0.0.1: the anonymous limit would be shared by
    # the whole run. tests/test_abuse_edge.py checks it on a server of its own.
    "ANONYMOUS_RATE_LIMIT_PER_MINUTE": "1000000",
    "SMTP_URL": f"smtp://127.0.0.1:{SMTP_PORT}",
    "MAIL_FROM": "agentgraph <notifications@agentgraph.example.com>",
}
os.environ.update(TEST_ENV)

from app.settings import get_settings  # noqa: E402  (after the environment is set)
from tests.harness import (  # noqa: E402
    ApiServer,
    GraphQLClient,
    TestUser,
    WorkerProcess,
    create_database,
    drop_database,
    drop_redis_prefix,
)


@pytest.fixture(scope="session")
async def database() -> AsyncIterator[str]:
    """This run's PostgreSQL database, built by the migrations; the test
    process's ORM is connected to it for direct checks."""
    from tortoise import Tortoise

    from app.schema_migrations import apply_migrations
    from app.settings import tortoise_config

    await create_database(PG_ADMIN_DSN, PG_DATABASE)
    try:
        await apply_migrations(TEST_ENV["DATABASE_URL"])
        await Tortoise.init(
            config=tortoise_config(TEST_ENV["DATABASE_URL"]), _enable_global_fallback=True
        )
        yield TEST_ENV["DATABASE_URL"]
        await Tortoise.close_connections()
    finally:
        await drop_database(PG_ADMIN_DSN, PG_DATABASE)
        await drop_redis_prefix(REDIS_URL, TEST_ENV["REDIS_PREFIX"])


@pytest.fixture(scope="session")
def settings():
    return get_settings()


@pytest.fixture(scope="session")
async def api(database: str) -> AsyncIterator[ApiServer]:
    """A real `agentgraph serve` on a free port."""
    async with ApiServer(env=TEST_ENV) as server:
        yield server


@pytest.fixture(scope="session")
def smtp_server():
    """A real SMTP server in this process that keeps every mail (tests/smtp_stand_in.py)."""
    from tests.smtp_stand_in import SmtpStandIn

    server = SmtpStandIn(SMTP_PORT)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
async def worker(database: str, smtp_server) -> AsyncIterator[WorkerProcess]:
    """A real `agentgraph worker` process for the run."""
    async with WorkerProcess(env=TEST_ENV) as process:
        yield process


STRIPE_WEBHOOK_SECRET = f"whsec_test_{RUN_ID}"


@pytest.fixture(scope="session")
def stripe_stand_in():
    """A local stand-in for Stripe's API (see tests/stripe_stand_in.py)."""
    from tests.stripe_stand_in import StripeStandIn

    stand_in = StripeStandIn()
    stand_in.start()
    try:
        yield stand_in
    finally:
        stand_in.stop()


@pytest.fixture(scope="session")
def stripe_env(stripe_stand_in) -> dict[str, str]:
    # Its own queue (a sub-prefix of the run's, so clean-up covers it): the
    # stripe worker, not the plain one, must pick up this API's jobs.
    return {
        **TEST_ENV,
        "REDIS_PREFIX": TEST_ENV["REDIS_PREFIX"] + "stripe:",
        "STRIPE_SECRET_KEY": "sk_test_agentgraph",
        "STRIPE_WEBHOOK_SECRET": STRIPE_WEBHOOK_SECRET,
        "STRIPE_API_BASE": stripe_stand_in.base_url,
        # Schedules belong to the main stack's queue and subscribers.
        "SCHEDULER_ENABLED": "false",
    }


@pytest.fixture(scope="session")
async def stripe_api(database: str, stripe_env) -> AsyncIterator[ApiServer]:
    """An API process whose payments go to the Stripe stand-in."""
    async with ApiServer(env=stripe_env) as server:
        yield server


@pytest.fixture(scope="session")
async def stripe_worker(database: str, stripe_env, smtp_server) -> AsyncIterator[WorkerProcess]:
    """A worker (on this run's queue) whose auto top-ups go to the Stripe stand-in."""
    async with WorkerProcess(env=stripe_env) as process:
        yield process


@pytest.fixture
async def stripe_gql(stripe_api: ApiServer) -> AsyncIterator[GraphQLClient]:
    client = GraphQLClient(stripe_api.base_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def gql(api: ApiServer) -> AsyncIterator[GraphQLClient]:
    client = GraphQLClient(api.base_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def new_user(settings):
    """A factory of fresh users (not yet seen by the server) with tokens."""

    def make(email: str | None = None, *, admin: bool = False) -> TestUser:
        return TestUser.fresh(settings, email=email, admin=admin)

    return make


@pytest.fixture
async def user(new_user, gql: GraphQLClient) -> TestUser:
    """A user the server has seen once (so their row and grant exist)."""
    person = new_user()
    await gql.ok("{ me { id } }", token=person.token)
    return person
