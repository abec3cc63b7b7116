"""1,000 live subscribers on ONE API process: the memory each costs, and how long
one execution event takes to reach all of them (fan-out latency, p50 and p99).

1,000 websockets (graphql-transport-ws), each with one `graphExecutionEvents`
subscription of the same graph, as 1,000 open pages of one graph would be:
the worst case for fan-out, every event goes to every socket. They belong to
one user, so the API process runs with MAX_WEBSOCKETS_PER_USER raised to 1,010
(the default, 20, would refuse the 21st socket); MAX_OPERATIONS_PER_WEBSOCKET
keeps its default, each socket has one operation. Sockets are opened by
LISTENER_PROCESSES processes (bench.subscribers listen), with the websockets
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

import argparse
import asyncio
import json
import random
import subprocess
import sys
import time

from bench.support import (
    BENCH_ROOT,
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
LISTENER_PROCESSES = 2
WARMUP_SUBSCRIBERS = 10
RUNS = 10
MAX_PAUSE_SECONDS = 0.5
CONNECT_BATCH = 50
DELIVERY_TIMEOUT_SECONDS = 120
GRAPH_EVENTS = """subscription($id: ID!) { graphExecutionEvents(graphId: $id) {
  seq execution { id status } } }"""
STATUSES = ("QUEUED", "RUNNING", "COMPLETED")


# ------------------------------------------------------------ a listener process


class Listener:
    """Websockets opened in this process, and when each message reached each."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.arrivals: dict[str, list[float]] = {}
        self.sent: dict[str, float] = {}
        self.failures: list[str] = []
        self.sockets: list = []
        self.readers: list[asyncio.Task] = []

    async def open_all(self) -> None:
        for start in range(0, self.args.count, CONNECT_BATCH):
            batch = min(CONNECT_BATCH, self.args.count - start)
            self.sockets += await asyncio.gather(*(self.open_one() for _ in range(batch)))
        self.readers = [asyncio.create_task(self.read(socket)) for socket in self.sockets]

    async def open_one(self):
        import websockets

        if self.args.mode == "bare":
            return await websockets.connect(self.args.url, ping_interval=None, open_timeout=120)
        socket = await websockets.connect(
            self.args.url,
            subprotocols=["graphql-transport-ws"],
            additional_headers={"Authorization": f"Bearer {self.args.token}"},
            ping_interval=None,
            open_timeout=120,
        )
        await socket.send(json.dumps({"type": "connection_init", "payload": {}}))
        ack = json.loads(await socket.recv())
        if ack.get("type") != "connection_ack":
            raise RuntimeError(f"not acknowledged: {ack}")
        await socket.send(
            json.dumps(
                {
                    "id": "events",
                    "type": "subscribe",
                    "payload": {"query": GRAPH_EVENTS, "variables": {"id": self.args.graph_id}},
                }
            )
        )
        return socket

    async def read(self, socket) -> None:
        async for raw in socket:
            arrived = time.time()
            message = json.loads(raw)
            if self.args.mode == "bare":
                self.arrivals.setdefault(message["id"], []).append(arrived)
                self.sent[message["id"]] = message["sent"]
            elif message.get("type") == "ping":
                await socket.send(json.dumps({"type": "pong"}))
            elif message.get("type") == "next" and "errors" not in message["payload"]:
                execution = message["payload"]["data"]["graphExecutionEvents"]["execution"]
                key = f"{execution['id']}:{execution['status']}"
                self.arrivals.setdefault(key, []).append(arrived)
            else:
                self.failures.append(raw if isinstance(raw, str) else raw.decode())

    def report(self) -> dict:
        report = {"arrivals": self.arrivals, "sent": self.sent, "failures": self.failures}
        self.arrivals, self.sent, self.failures = {}, {}, []
        return report

    async def close_all(self) -> None:
        for reader in self.readers:
            reader.cancel()
        await asyncio.gather(*self.readers, return_exceptions=True)
        await asyncio.gather(*(socket.close() for socket in self.sockets), return_exceptions=True)


async def listen(args: argparse.Namespace) -> None:
    """Opens its sockets, says "ready", then answers "report" lines on stdin with a
    JSON line of what arrived since the last one, until "quit"."""
    listener = Listener(args)
    await listener.open_all()
    commands = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(commands), sys.stdin)

    def answer(message: dict) -> None:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()

    answer({"ready": len(listener.sockets)})
    while (command := (await commands.readline()).strip()) not in (b"quit", b""):
        if command == b"report":
            answer(listener.report())
    await listener.close_all()


class Listeners:
    """LISTENER_PROCESSES listener processes holding `count` sockets between them."""

    def __init__(self, mode: str, url: str, count: int, token: str = "", graph_id: str = ""):
        self.options = [f"--mode={mode}", f"--url={url}", f"--token={token}"]
        self.options.append(f"--graph-id={graph_id}")
        self.count = count
        self.processes: list[asyncio.subprocess.Process] = []
        self.arrivals: dict[str, list[float]] = {}
        self.sent: dict[str, float] = {}

    async def start(self) -> None:
        shares = [self.count // LISTENER_PROCESSES] * LISTENER_PROCESSES
        shares[0] += self.count - sum(shares)
        for share in shares:
            if share:
                self.processes.append(
                    await asyncio.create_subprocess_exec(
                        sys.executable,
                        "-m",
                        "bench.subscribers",
                        "listen",
                        f"--count={share}",
                        *self.options,
                        cwd=BENCH_ROOT,
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        limit=1 << 26,
                    )
                )
        opened = [await self._line(process) for process in self.processes]
        if sum(line["ready"] for line in opened) != self.count:
            raise RuntimeError(f"listeners opened {opened}, wanted {self.count}")

    async def _line(self, process: asyncio.subprocess.Process) -> dict:
        line = await asyncio.wait_for(process.stdout.readline(), DELIVERY_TIMEOUT_SECONDS)
        if not line:
            raise RuntimeError(f"listener process exited ({await process.wait()})")
        return json.loads(line)

    async def collect(self) -> None:
        """Merge what every listener has received since the last call."""
        for process in self.processes:
            process.stdin.write(b"report\n")
            await process.stdin.drain()
            report = await self._line(process)
            if report["failures"]:
                raise RuntimeError(f"subscription failed: {report['failures'][:3]}")
            for key, times in report["arrivals"].items():
                self.arrivals.setdefault(key, []).extend(times)
            self.sent.update(report["sent"])

    async def wait_for_all(self, keys: list[str]) -> None:
        """Until every socket has received every one of `keys`."""
        deadline = time.monotonic() + DELIVERY_TIMEOUT_SECONDS
        while True:
            await self.collect()
            counts = {key: len(self.arrivals.get(key, ())) for key in keys}
            if all(count >= self.count for count in counts.values()):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"deliveries so far: {counts} of {self.count} each")
            await asyncio.sleep(0.2)

    async def stop(self) -> None:
        for process in self.processes:
            if process.returncode is None:
                process.stdin.write(b"quit\n")
                await process.stdin.drain()
        for process in self.processes:
            try:
                await asyncio.wait_for(process.wait(), 60)
            except TimeoutError:
                process.kill()
                await process.wait()


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


def parse_listen_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench.subscribers listen")
    parser.add_argument("--mode", choices=["graphql", "bare"], required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--token", default="")
    parser.add_argument("--graph-id", default="")
    return parser.parse_args(argv)


if __name__ == "__main__":
    if sys.argv[1:2] == ["listen"]:
        import uvloop

        uvloop.run(listen(parse_listen_args(sys.argv[2:])))
    else:
        asyncio.run(main())
