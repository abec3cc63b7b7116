"""Clients and servers the tests drive: a real API process, HTTP and websocket clients."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import websockets
from redis.asyncio import Redis

from app.auth import issue_jwt
from app.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


async def create_database(admin_dsn: str, name: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def drop_database(admin_dsn: str, name: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def drop_redis_prefix(redis_url: str, prefix: str) -> None:
    """Delete every key of one run (its own prefix), in batches."""
    redis = Redis.from_url(redis_url)
    try:
        batch = []
        async for key in redis.scan_iter(match=f"{prefix}*", count=500):
            batch.append(key)
            if len(batch) >= 500:
                await redis.delete(*batch)
                batch.clear()
        if batch:
            await redis.delete(*batch)
    finally:
        await redis.aclose()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _ChildProcess:
    """One of our processes in its own OS process: `async with` starts it and
    stops it (SIGTERM, then SIGKILL if it does not end in time)."""

    process: subprocess.Popen | None
    log_path: Path
    stop_seconds: float = 15.0

    async def start(self, timeout: float = 30.0) -> None:
        raise NotImplementedError

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    async def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.process.wait, self.stop_seconds)
            except subprocess.TimeoutExpired:
                self.process.kill()

    async def __aenter__(self):
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


class ApiServer(_ChildProcess):
    """`agentgraph serve` in its own process, as production runs it."""

    # Answers 200 once the server is ready.
    health_path = "/health"

    def __init__(self, env: dict[str, str], extra_env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.env = {**os.environ, **env, **(extra_env or {})}
        self.process = None
        self.log_path = Path(f"/tmp/agentgraph-api-{self.port}.log")

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/graphql"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "app.cli", "serve", "--port", str(self.port)]

    async def start(self, timeout: float = 30.0) -> None:
        await self._launch()
        await self._wait_until(lambda status: status == 200, timeout)

    async def start_without_waiting_for_health(self, timeout: float = 30.0) -> None:
        """For servers whose dependencies are down: wait until /health answers at all."""
        await self._launch()
        await self._wait_until(lambda status: True, timeout)

    async def _launch(self) -> None:
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(  # noqa: ASYNC220 - starts, never waits
            self.command(), cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
        )

    async def _wait_until(self, accept, timeout: float) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        async with httpx.AsyncClient() as client:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"server exited early:\n{self.log()}")
                try:
                    if accept((await client.get(self.base_url + self.health_path)).status_code):
                        return
                except httpx.TransportError:
                    pass
                if asyncio.get_running_loop().time() > deadline:
                    raise RuntimeError(f"server did not become ready:\n{self.log()}")
                await asyncio.sleep(0.1)


class WorkerProcess(_ChildProcess):
    """`agentgraph worker` in its own process; can be killed like a crashed one."""

    stop_seconds = 20.0

    def __init__(self, env: dict[str, str], extra_env: dict[str, str] | None = None) -> None:
        self.env = {**os.environ, **env, "LOG_LEVEL": "INFO", **(extra_env or {})}
        self.process = None
        self.log_path = Path(f"/tmp/agentgraph-worker-{uuid.uuid4().hex[:8]}.log")

    async def start(self, timeout: float = 30.0) -> None:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(  # noqa: ASYNC220 - starts, never waits
                [sys.executable, "-m", "app.cli", "worker"],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = asyncio.get_running_loop().time() + timeout
        while "worker started" not in self.log():
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited early:\n{self.log()}")
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError(f"worker did not start:\n{self.log()}")
            await asyncio.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no clean-up, as when a machine dies."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@dataclass
class TestUser:
    __test__ = False

    id: uuid.UUID
    email: str
    token: str

    @classmethod
    def fresh(cls, settings: Settings, email: str | None = None, admin: bool = False) -> TestUser:
        user_id = uuid.uuid4()
        email = email or f"user-{user_id.hex[:8]}@example.test"
        return cls(id=user_id, email=email, token=issue_jwt(settings, user_id, email, admin=admin))


class GraphQLError(AssertionError):
    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(json.dumps(errors, indent=2))
        self.errors = errors


class GraphQLClient:
    """POSTs GraphQL documents the way a web client does."""

    def __init__(self, base_url: str) -> None:
        self.http = httpx.AsyncClient(base_url=base_url, timeout=30)

    async def aclose(self) -> None:
        await self.http.aclose()

    async def post(
        self,
        query: str,
        variables: dict[str, Any] | None = None,
        *,
        token: str | None = None,
        api_key: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        all_headers = dict(headers or {})
        if token:
            all_headers["Authorization"] = f"Bearer {token}"
        if api_key:
            all_headers["X-API-Key"] = api_key
        return await self.http.post(
            "/graphql", json={"query": query, "variables": variables or {}}, headers=all_headers
        )

    async def execute(self, query: str, variables: dict[str, Any] | None = None, **kw: Any):
        response = await self.post(query, variables, **kw)
        assert response.headers["content-type"].startswith("application/json"), response.text
        return response.json()

    async def ok(self, query: str, variables: dict[str, Any] | None = None, **kw: Any):
        """The data of a request that must succeed."""
        body = await self.execute(query, variables, **kw)
        if body.get("errors"):
            raise GraphQLError(body["errors"])
        return body["data"]

    async def error(
        self, query: str, variables: dict[str, Any] | None = None, **kw: Any
    ) -> dict[str, Any]:
        """The single error of a request that must fail."""
        body = await self.execute(query, variables, **kw)
        assert body.get("errors"), f"expected an error, got {body}"
        assert len(body["errors"]) == 1, body["errors"]
        return body["errors"][0]

    async def error_code(self, query: str, variables: dict[str, Any] | None = None, **kw) -> str:
        return (await self.error(query, variables, **kw))["extensions"]["code"]


class GraphQLWebSocket:
    """A graphql-transport-ws client over a real websocket."""

    def __init__(self, connection: websockets.ClientConnection) -> None:
        self.connection = connection

    async def send(self, message: dict[str, Any]) -> None:
        await self.connection.send(json.dumps(message))

    async def receive(self, timeout: float = 10.0) -> dict[str, Any]:
        while True:
            frame = await asyncio.wait_for(self.connection.recv(), timeout)
            # Browser clients (graphql-ws, Apollo, GraphiQL) read text frames only.
            assert isinstance(frame, str), f"binary websocket frame: {frame[:80]!r}"
            message = json.loads(frame)
            if message.get("type") == "ping":
                await self.send({"type": "pong"})
                continue
            return message

    async def subscribe(
        self, query: str, variables: dict[str, Any] | None = None, op_id: str | None = None
    ) -> str:
        op_id = op_id or uuid.uuid4().hex
        await self.send(
            {
                "id": op_id,
                "type": "subscribe",
                "payload": {"query": query, "variables": variables or {}},
            }
        )
        return op_id

    async def results(self, op_id: str, timeout: float = 10.0) -> AsyncIterator[dict[str, Any]]:
        """Messages for one operation until it completes or errors."""
        while True:
            message = await self.receive(timeout)
            if message.get("id") != op_id:
                continue
            yield message
            if message["type"] in ("complete", "error"):
                return

    async def request(self, query: str, variables: dict[str, Any] | None = None):
        """Run a query or mutation over the socket; returns its one `next` payload."""
        op_id = await self.subscribe(query, variables)
        messages = [m async for m in self.results(op_id)]
        return messages


@asynccontextmanager
async def graphql_ws(
    url: str,
    connection_params: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    expect_ack: bool = True,
) -> AsyncIterator[GraphQLWebSocket]:
    async with websockets.connect(
        url, subprotocols=["graphql-transport-ws"], additional_headers=headers or {}
    ) as connection:
        client = GraphQLWebSocket(connection)
        await client.send({"type": "connection_init", "payload": connection_params or {}})
        if expect_ack:
            ack = await client.receive()
            assert ack["type"] == "connection_ack", ack
        yield client


async def closed_with(connection, deadline: float = 15.0) -> int | None:
    """The close code once the server closes a raw websocket (pings answered)."""
    try:
        async with asyncio.timeout(deadline):
            while True:
                message = json.loads(await connection.recv())
                if message.get("type") == "ping":
                    await connection.send(json.dumps({"type": "pong"}))
    except websockets.ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else None


async def until_two_fit(server: ApiServer, auth: dict, timeout: float = 30.0) -> None:
    """Two sockets of the user (signed in by connection_init) fit again: the server
    notices a close a moment after the client makes it, so ask until they do."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            async with graphql_ws(server.ws_url, auth), graphql_ws(server.ws_url, auth):
                return
        except websockets.ConnectionClosed as closed:
            assert closed.rcvd is not None and closed.rcvd.code == 4429, closed
        assert asyncio.get_running_loop().time() < deadline, "the slots were never given back"
        await asyncio.sleep(0.05)


MULTIPART_ACCEPT = 'multipart/mixed;boundary="graphql";subscriptionSpec=1.0,application/json'


async def multipart_parts(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """The JSON bodies of a multipart/mixed subscription response (Apollo's
    protocol), heartbeats (`{}`) included, as they arrive."""
    boundary = "\r\n--graphql"
    buffer = ""
    async for chunk in response.aiter_text():
        buffer += chunk
        while boundary in buffer:
            part, buffer = buffer.split(boundary, 1)
            _, _, body = part.partition("\r\n\r\n")
            if body.strip():
                yield json.loads(body)
        if buffer.startswith("--"):
            return  # the closing delimiter


async def sse_events(response: httpx.Response) -> AsyncIterator[tuple[str, str]]:
    """(event, data) of a text/event-stream response, as they arrive; comments skipped."""
    buffer = ""
    async for chunk in response.aiter_text():
        buffer += chunk.replace("\r\n", "\n")
        while "\n\n" in buffer:
            block, buffer = buffer.split("\n\n", 1)
            fields = dict(
                line.split(": ", 1) if ": " in line else (line.rstrip(":"), "")
                for line in block.split("\n")
                if line and not line.startswith(":")
            )
            if fields:
                yield fields.get("event", "message"), fields.get("data", "")
