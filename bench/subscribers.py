"""1,000 live subscribers on ONE API process: the memory each costs, and how long
one execution event takes to reach all of them (fan-out latency, p50 and p99).

1,000 websockets (graphql-transport-ws), each with one `graphExecutionEvents`
subscription of the same graph, as 1,000 open pages of one graph would be:
the worst case for fan-out, every event goes to every socket. They belong to
one user, so the API process runs with MAX_WEBSOCKETS_PER_USER raised to 1,010
(the default, 20, would refuse the 21st socket); MAX_OPERATIONS_PER_WEBSOCKET
keeps its default, each socket has one operation. Sockets are opened by
LISTENER_PROCESSES processes (bench/_subscriber_listeners.py), with the websockets
library's defaults, per-message deflate included, as a browser offers it.

Memory: the API process's RSS (VmRSS), idle after it served a few subscribers
(so the code paths are loaded), and again once 1,000 subscribers are open and
have each received a run's events; the difference / 1,000 is one subscriber.

Latency: RUNS runs of a graph (Wait 1 s -> AgentOutput) started with
executeGraph; each puts QUEUED, RUNNING and COMPLETED on the graph's event
stream. An observer in this process blocks on that Redis stream too and notes
when each event appears there; a delivery's latency is its arrival at a
subscriber minus that moment (one machine, one wall clock). The figures are
over every (event, subscriber) delivery.

Baseline (same run, same listener processes): a bare Starlette websocket route
on uvicorn, same flags (bench.support.serve_bare), whose connections each wait
on their own asyncio queue for what POST /broadcast puts on all of them; the
least a uvicorn process can do to hold 1,000 sockets and push one message to
each. Its RSS growth per socket is the memory baseline and its broadcast
latency (send time stamped by the server) the fan-out baseline.
"""

from __future__ import annotations

import asyncio
import random
import time

from bench._subscriber_listeners import Listeners
from bench.support import (
    BareServer,
    bench_stack,
    figure_line,
    median,
    ms,
    percentile,
    raise_open_file_limit,
    rss_kib,
    signed_in_user,
)

SUBSCRIBERS = 1000
WARMUP_SUBSCRIBERS = 10
RUNS = 10
MAX_PAUSE_SECONDS = 0.5
STATUSES = ("QUEUED", "RUNNING", "COMPLETED")


# ------------------------------------------------------------ the API measurement


class StreamObserver:
    """When each status event of one graph appeared on its Redis stream."""

    def __init__(self, redis_url: str, key: str) -> None:
        from redis.asyncio import Redis

        self.redis = Redis.from_url(redis_url)
        self.key = key
        self.published: dict[str, float] = {}
        self.task: asyncio.Task | None = None

    async def start(self) -> None:
        newest = await self.redis.xrevrange(self.key, "+", "-", count=1)
        last_id = newest[0][0] if newest else b"0-0"
        self.task = asyncio.create_task(self._read(last_id))

    async def _read(self, last_id: bytes) -> None:
        import orjson

        while True:
            result = await self.redis.xread({self.key: last_id}, block=0)
            seen = time.time()
            for _, entries in result:
                for entry_id, fields in entries:
                    last_id = entry_id
                    execution = orjson.loads(fields[b"data"])["execution"]
                    self.published[f"{execution['id']}:{execution['status']}"] = seen

    async def aclose(self) -> None:
        if self.task:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        await self.redis.aclose()


async def measure_api(stack) -> dict:
    from app.events import EventKeys
    from tests.execution_helpers import execute
    from tests.graph_builders import create_graph, link, node
    from tests.harness import GraphQLClient

    pid = stack.server.process.pid
    gql = GraphQLClient(stack.server.base_url)
    observer = None
    try:
        user = await signed_in_user(gql)
        graph = await create_graph(
            gql,
            user,
            {
                "name": "fan-out",
                "nodes": [
                    node("w", "Wait", input="done", seconds=1),
                    node("o", "AgentOutput", name="o"),
                ],
                "links": [link("w", "output", "o", "value")],
            },
        )
        observer = StreamObserver(
            stack.env["REDIS_URL"], EventKeys(stack.env["REDIS_PREFIX"]).graph_stream(graph["id"])
        )
        await observer.start()

        async def run_to_everyone(listeners: Listeners) -> str:
            started = await execute(gql, user, graph["id"])
            await listeners.wait_for_all([f"{started['id']}:{status}" for status in STATUSES])
            return started["id"]

        async def until_all_subscribed(listeners: Listeners) -> None:
            """Runs until one reaches every socket with all its events. A socket's
            subscription counts from when the server has handled it (no message
            says so), and 1,000 of them take a moment; a run started before that
            reaches the late ones only with its later events."""
            for _ in range(10):
                started = await execute(gql, user, graph["id"])
                keys = [f"{started['id']}:{status}" for status in STATUSES]
                await listeners.wait_for_all(keys[-1:])
                if all(len(listeners.arrivals.get(key, ())) >= listeners.count for key in keys):
                    return
            raise RuntimeError("subscriptions never all took effect")

        # Idle, after a few subscribers were served once (code paths loaded).
        warmup = Listeners(
            "graphql", stack.server.ws_url, WARMUP_SUBSCRIBERS, user.token, graph["id"]
        )
        await warmup.start()
        await until_all_subscribed(warmup)
        await warmup.stop()
        await asyncio.sleep(1)
        idle = rss_kib(pid)

        listeners = Listeners("graphql", stack.server.ws_url, SUBSCRIBERS, user.token, graph["id"])
        await listeners.start()
        try:
            opened = rss_kib(pid)
            await until_all_subscribed(listeners)
            subscribed = rss_kib(pid)
            pauses = random.Random(7)
            runs = []
            for _ in range(RUNS):
                await asyncio.sleep(pauses.uniform(0, MAX_PAUSE_SECONDS))
                runs.append(await run_to_everyone(listeners))
            after_runs = rss_kib(pid)
        finally:
            await listeners.stop()
        await asyncio.sleep(1)
        closed = rss_kib(pid)
    finally:
        await gql.aclose()
        if observer:
            await observer.aclose()

    latencies: dict[str, list[float]] = {status: [] for status in STATUSES}
    reached_all: dict[str, list[float]] = {status: [] for status in STATUSES}
    for execution_id in runs:
        for status in STATUSES:
            key = f"{execution_id}:{status}"
            delays = [t - observer.published[key] for t in listeners.arrivals[key]]
            latencies[status] += delays
            reached_all[status].append(max(delays))
    return {
        "idle": idle,
        "opened": opened,
        "subscribed": subscribed,
        "after_runs": after_runs,
        "closed": closed,
        "latencies": latencies,
        "reached_all": reached_all,
    }


async def measure_bare() -> dict:
    import httpx

    server = BareServer()
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
            counter = iter(range(1_000_000))

            async def broadcast_to_everyone(listeners: Listeners) -> str:
                key = f"b{next(counter)}"
                response = await http.post("/broadcast", json={"id": key})
                assert response.json()["listeners"] == listeners.count, response.text
                await listeners.wait_for_all([key])
                return key

            warmup = Listeners("bare", server.ws_url, WARMUP_SUBSCRIBERS)
            await warmup.start()
            await broadcast_to_everyone(warmup)
            await warmup.stop()
            await asyncio.sleep(1)
            idle = rss_kib(server.pid)

            listeners = Listeners("bare", server.ws_url, SUBSCRIBERS)
            await listeners.start()
            try:
                await broadcast_to_everyone(listeners)
                subscribed = rss_kib(server.pid)
                pauses = random.Random(7)
                keys = []
                for _ in range(RUNS):
                    await asyncio.sleep(pauses.uniform(0, MAX_PAUSE_SECONDS))
                    keys.append(await broadcast_to_everyone(listeners))
            finally:
                await listeners.stop()
    finally:
        await server.stop()
    latencies, reached_all = [], []
    for key in keys:
        delays = [t - listeners.sent[key] for t in listeners.arrivals[key]]
        latencies += delays
        reached_all.append(max(delays))
    return {
        "idle": idle,
        "subscribed": subscribed,
        "latencies": latencies,
        "reached_all": reached_all,
    }


def spread(samples: list[float]) -> str:
    return f"p50 {ms(median(samples))}, p99 {ms(percentile(samples, 99))}, max {ms(max(samples))}"


async def main() -> None:
    # Each side holds 1,000 sockets; the API process inherits this limit.
    limit = raise_open_file_limit(SUBSCRIBERS * 4)
    async with bench_stack(
        start_worker=True, api_env={"MAX_WEBSOCKETS_PER_USER": str(SUBSCRIBERS + 10)}
    ) as stack:
        api = await measure_api(stack)
    bare = await measure_bare()

    per_subscriber = (api["subscribed"] - api["idle"]) / SUBSCRIBERS
    per_socket = (bare["subscribed"] - bare["idle"]) / SUBSCRIBERS
    every = [delay for status in STATUSES for delay in api["latencies"][status]]
    p50, p99 = median(every), percentile(every, 99)
    bare_p50, bare_p99 = median(bare["latencies"]), percentile(bare["latencies"], 99)

    print(f"{SUBSCRIBERS} graphExecutionEvents subscribers on one API process (open files {limit})")
    print(
        f"  API RSS: idle {api['idle'] / 1024:.1f} MiB, 1,000 sockets open "
        f"{api['opened'] / 1024:.1f} MiB, subscribed and served one run "
        f"{api['subscribed'] / 1024:.1f} MiB, after {RUNS} more runs "
        f"{api['after_runs'] / 1024:.1f} MiB, sockets closed {api['closed'] / 1024:.1f} MiB"
    )
    print(
        f"  per subscriber: {per_subscriber:.1f} KiB; 1,000 subscribers add "
        f"{(api['subscribed'] - api['idle']) / api['idle']:.0%} of the idle process"
    )
    # Should be ~0 (caches warm); growth here is memory kept per delivered event.
    deliveries = RUNS * len(STATUSES) * SUBSCRIBERS
    print(
        f"  while open, RSS grew {(api['after_runs'] - api['subscribed']) / deliveries:.2f} KiB "
        f"per delivered event ({RUNS} runs x {len(STATUSES)} events x {SUBSCRIBERS})"
    )
    print(
        f"  bare websocket baseline: idle {bare['idle'] / 1024:.1f} MiB, "
        f"{per_socket:.1f} KiB a socket"
    )
    print(f"fan-out, {RUNS} runs x {len(STATUSES)} events x {SUBSCRIBERS} subscribers:")
    for status in STATUSES:
        print(
            f"  {status:9} at a subscriber after it reached Redis: "
            f"{spread(api['latencies'][status])}; "
            f"all {SUBSCRIBERS} reached (median of runs) {ms(median(api['reached_all'][status]))}"
        )
    print(f"  every event: {spread(every)}")
    print(
        f"  bare broadcast baseline: {spread(bare['latencies'])}; all {SUBSCRIBERS} reached "
        f"(median) {ms(median(bare['reached_all']))}"
    )
    print(
        f"subscribers: {per_subscriber:.0f} KiB a subscriber ({per_socket:.0f} KiB a bare "
        f"websocket); fan-out to {SUBSCRIBERS} p50 {ms(p50)}, p99 {ms(p99)} "
        f"(bare: p50 {ms(bare_p50)}, p99 {ms(bare_p99)})"
    )
    print(
        figure_line(
            "subscriber_memory_kib", per_subscriber, "KiB", per_socket, per_subscriber / per_socket
        )
    )
    print(figure_line("fanout_latency_p50_ms", p50 * 1000, "ms", bare_p50 * 1000, p50 / bare_p50))
    print(figure_line("fanout_latency_p99_ms", p99 * 1000, "ms", bare_p99 * 1000, p99 / bare_p99))


if __name__ == "__main__":
    asyncio.run(main())
