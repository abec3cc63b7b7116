"""The client side of bench/subscribers.py: processes that each open many
websockets (graphql-transport-ws subscriptions of one graph's events, or bare
sockets of the baseline server) and note when every message reached each, so
the clients' own work stays out of the measured server's process and the
benchmark's. `python -m bench._subscriber_listeners --mode=... --url=... --count=N`
opens its sockets, says "ready", then answers "report" lines on stdin."""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time

from bench.support import BENCH_ROOT

LISTENER_PROCESSES = 2
CONNECT_BATCH = 50
DELIVERY_TIMEOUT_SECONDS = 120
GRAPH_EVENTS = """subscription($id: ID!) { graphExecutionEvents(graphId: $id) {
  seq execution { id status } } }"""


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
                        "bench._subscriber_listeners",
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


def parse_listen_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench._subscriber_listeners")
    parser.add_argument("--mode", choices=["graphql", "bare"], required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--token", default="")
    parser.add_argument("--graph-id", default="")
    return parser.parse_args(argv)


if __name__ == "__main__":
    import uvloop

    uvloop.run(listen(parse_listen_args(sys.argv[1:])))
