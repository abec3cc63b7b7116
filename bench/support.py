"""What every benchmark needs: its own database, Redis prefix, API and worker
processes, a way to time things, the INSERT + UPDATE baseline, and the FIGURE
line that `python -m bench` collects. Run one with `python -m bench.<name>`."""

from __future__ import annotations

import asyncio
import base64
import os
import shlex
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from tests.harness import ApiServer

PG_ADMIN_DSN = os.environ.get("BENCH_PG_ADMIN_DSN", "postgres://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
BENCH_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Stack:
    env: dict[str, str]
    server: object  # tests.harness.ApiServer
    database_url: str
    worker: object | None = None  # tests.harness.WorkerProcess


def bench_env(run_id: str) -> dict[str, str]:
    database = f"agentgraph_bench_{run_id}"
    return {
        "ENVIRONMENT": "production",
        "DATABASE_URL": PG_ADMIN_DSN.rsplit("/", 1)[0] + f"/{database}?maxsize=20",
        "REDIS_URL": REDIS_URL,
        "REDIS_PREFIX": f"agentgraph-bench-{run_id}:",
        "JWT_SECRET": f"bench-secret-{run_id}-0123456789abcdef",
        "API_KEY_PEPPER": f"bench-pepper-{run_id}",
        # Production refuses to start without a key for stored credentials.
        "CREDENTIALS_ENCRYPTION_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode(),
        "LOG_LEVEL": "WARNING",
        # executeGraph refuses users without credits; the blocks benched here cost nothing.
        "STARTING_CREDITS": "1000",
    }


@asynccontextmanager
async def bench_stack(
    start_api: bool = True, start_worker: bool = False, api_env: dict[str, str] | None = None
) -> AsyncIterator[Stack]:
    """A fresh PostgreSQL database (migrated), a Redis prefix, an API process and,
    when asked, an `agentgraph worker` process; the benchmark process's ORM is
    connected too. Everything is removed after. `api_env` is extra environment
    for the API process only (e.g. a raised limit)."""
    run_id = uuid.uuid4().hex[:10]
    env = bench_env(run_id)
    os.environ.update(env)
    from tortoise import Tortoise

    from app.schema_migrations import apply_migrations
    from app.settings import get_settings, tortoise_config
    from tests.harness import (
        ApiServer,
        WorkerProcess,
        create_database,
        drop_database,
        drop_redis_prefix,
    )

    get_settings.cache_clear()
    database = f"agentgraph_bench_{run_id}"
    await create_database(PG_ADMIN_DSN, database)
    server = ApiServer(env, api_env) if start_api else None
    worker = WorkerProcess(env) if start_worker else None
    try:
        await apply_migrations(env["DATABASE_URL"])
        await Tortoise.init(
            config=tortoise_config(env["DATABASE_URL"]), _enable_global_fallback=True
        )
        if server:
            await server.start()
        if worker:
            await worker.start()
        yield Stack(env=env, server=server, database_url=env["DATABASE_URL"], worker=worker)
    finally:
        if worker:
            await worker.stop()
        if server:
            await server.stop()
        await Tortoise.close_connections()
        await drop_database(PG_ADMIN_DSN, database)
        await drop_redis_prefix(REDIS_URL, env["REDIS_PREFIX"])


async def timed(fn: Callable[[], Awaitable[object]], runs: int, warmup: int = 3) -> list[float]:
    """Seconds per call, after a few warm-up calls."""
    for _ in range(warmup):
        await fn()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        await fn()
        samples.append(time.perf_counter() - started)
    return samples


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def median(samples: list[float]) -> float:
    return statistics.median(samples)


class RoundTripBaseline:
    """INSERT then UPDATE of one row, each its own statement and commit, on a plain
    table of the benchmark database: the cheapest way to record a state change
    durably, which every engine step must do at least once. A plain table rather
    than a TEMP one, because temp tables skip the WAL flush on commit that the
    engine's tables pay. Benchmarks sample it between their runs, so the
    baseline sees the same machine load as the figure it is compared with."""

    def __init__(self, connection) -> None:
        self.connection = connection
        self.samples: list[float] = []

    async def sample(self, runs: int = 20) -> None:
        self.samples += await timed(self._round_trip, runs, warmup=2)

    async def _round_trip(self) -> None:
        row_id = uuid.uuid4()
        await self.connection.execute(
            "INSERT INTO bench_round_trip (id, status, data) VALUES ($1, 'QUEUED', '{}')", row_id
        )
        await self.connection.execute(
            "UPDATE bench_round_trip SET status = 'COMPLETED', data = $2 WHERE id = $1",
            row_id,
            '{"output": 1}',
        )

    def median(self) -> float:
        return median(self.samples)


@asynccontextmanager
async def round_trip_baseline(database_url: str) -> AsyncIterator[RoundTripBaseline]:
    import asyncpg

    connection = await asyncpg.connect(database_url.split("?")[0])
    try:
        await connection.execute(
            "CREATE TABLE IF NOT EXISTS bench_round_trip "
            "(id uuid PRIMARY KEY, status text NOT NULL, data jsonb NOT NULL)"
        )
        yield RoundTripBaseline(connection)
    finally:
        await connection.close()


# ------------------------------------------------------------ figures

FIGURE_PREFIX = "FIGURE "


def figure_line(
    name: str,
    value: float,
    unit: str,
    baseline: float,
    ratio: float,
    baseline_unit: str | None = None,
) -> str:
    """The machine-readable last line(s) of a benchmark, parsed by `python -m bench`.
    Units carry no spaces (ms, node_runs/s); `baseline_unit` defaults to `unit`."""
    fields = {
        "name": name,
        "value": f"{value:.4g}",
        "unit": unit,
        "baseline": f"{baseline:.4g}",
        "baseline_unit": baseline_unit or unit,
        "ratio": f"{ratio:.3g}",
    }
    return FIGURE_PREFIX + " ".join(f"{k}={shlex.quote(v)}" for k, v in fields.items())


def parse_figure(line: str) -> dict[str, str] | None:
    """The fields of a FIGURE line, or None for any other line."""
    if not line.startswith(FIGURE_PREFIX):
        return None
    fields = dict(
        token.split("=", 1) for token in shlex.split(line[len(FIGURE_PREFIX) :]) if "=" in token
    )
    return fields if "name" in fields and "value" in fields else None


# ------------------------------------------------------------ runs through the API

STATUS_QUERY = "query($id: ID!) { execution(id: $id) { status } }"
ENDED = {"COMPLETED", "FAILED", "TERMINATED"}


async def signed_in_user(gql):
    """A fresh user the API has seen once (so their row and starting credits exist)."""
    from app.settings import get_settings
    from tests.harness import TestUser

    user = TestUser.fresh(get_settings())
    await gql.ok("{ me { id } }", token=user.token)
    return user


async def wait_until_ended(gql, user, execution_id: str, timeout: float = 300.0) -> str:
    """Polls a one-field query, so waiting adds little load to the processes measured;
    the figures come from the timestamps the worker stored, not from this loop."""
    deadline = time.monotonic() + timeout
    while True:
        data = await gql.ok(STATUS_QUERY, {"id": execution_id}, token=user.token)
        status = data["execution"]["status"]
        if status in ENDED:
            return status
        if time.monotonic() > deadline:
            raise TimeoutError(f"execution {execution_id} still {status}")
        await asyncio.sleep(0.1)


async def time_stop(gql, user, execution_id: str, timeout: float = 300.0) -> float:
    """Seconds from sending stopExecution until the execution is TERMINATED in the
    database (read directly, so no API round trip adds to it)."""
    from app.models import Execution

    stop_mutation = "mutation($id: ID!) { stopExecution(id: $id) { status } }"
    started = time.perf_counter()
    stop = asyncio.create_task(gql.ok(stop_mutation, {"id": execution_id}, token=user.token))
    while (await Execution.get(id=execution_id)).status != "TERMINATED":
        assert time.perf_counter() - started < timeout, "the stop never ended"
        await asyncio.sleep(0.01)
    took = time.perf_counter() - started
    await stop
    return took


def seconds_between(start: str, end: str) -> float:
    """Seconds between two ISO timestamps as the API returns them."""
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


async def block_run_seconds(node_executions: list[dict]) -> float:
    """What the blocks themselves cost: each node execution's block validated and run
    again here on the inputs it had, as the engine's timed section does (input
    validation + the run), without any of the engine's bookkeeping around it."""
    from app.blocks.base import BlockRunContext
    from app.blocks.registry import get_block
    from app.settings import get_settings

    context = BlockRunContext(settings=get_settings(), user_id=uuid.uuid4())
    total = 0.0
    for row in node_executions:
        block = get_block(uuid.UUID(row["blockId"]))
        started = time.perf_counter()
        typed = block.validate_input(row["inputData"])
        async for _ in block.run(typed, context):
            pass
        total += time.perf_counter() - started
    return total


# ------------------------------------------------------------ processes


def rss_kib(pid: int) -> int:
    """Resident memory of a process (VmRSS), in KiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    with open(f"/proc/{pid}/stat") as stat:
        # The command name (field 2) may hold spaces; utime and stime follow it.
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def raise_open_file_limit(wanted: int) -> int:
    """Raise this process's soft open-file limit towards `wanted` (never above the
    hard limit); processes started afterwards inherit it. Returns the limit now."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


# ------------------------------------------------------------ the bare baseline server


def bare_app():
    """The least a Starlette app on uvicorn can do: a constant JSON route, and a
    websocket route whose connections each forward, from a task of their own,
    what POST /broadcast puts on their queue, stamped with the wall-clock time it
    was sent (the shape of a subscriber: a reader and a sender per connection,
    woken by a fan-out)."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route, WebSocketRoute

    listeners: set[asyncio.Queue] = set()

    async def ok(request):
        return JSONResponse({"ok": True})

    async def broadcast(request):
        message = {"id": (await request.json())["id"], "sent": time.time()}
        for queue in listeners:
            queue.put_nowait(message)
        return JSONResponse({"listeners": len(listeners)})

    async def listen(websocket):
        await websocket.accept()
        queue: asyncio.Queue = asyncio.Queue()

        async def forward() -> None:
            while True:
                await websocket.send_json(await queue.get())

        listeners.add(queue)
        forwarding = asyncio.create_task(forward())
        try:
            # Reading is how a server learns that the client went away.
            while (await websocket.receive())["type"] != "websocket.disconnect":
                pass
        finally:
            listeners.discard(queue)
            forwarding.cancel()

    return Starlette(
        routes=[
            Route("/ok", ok, methods=["GET"]),
            Route("/broadcast", broadcast, methods=["POST"]),
            WebSocketRoute("/ws", listen),
        ]
    )


def serve_bare(port: int) -> None:
    """uvicorn with the flags `agentgraph serve` uses (app/cli.py cmd_serve)."""
    import uvicorn

    from app.cli import UVICORN_OPTIONS

    uvicorn.run(
        "bench.support:bare_app",
        factory=True,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        **UVICORN_OPTIONS,
    )


class BareServer(ApiServer):
    """`serve_bare` in its own process, started and stopped like the API."""

    health_path = "/ok"

    def __init__(self) -> None:
        super().__init__(env={})

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def command(self) -> list[str]:
        code = "import sys; from bench.support import serve_bare; serve_bare(int(sys.argv[1]))"
        return [sys.executable, "-c", code, str(self.port)]
