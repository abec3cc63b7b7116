"""`me` query throughput: requests/s of `{ me { id email credits } }` with a bearer
token against one API process, 32 keep-alive connections, and the p50 latency.

Baseline (same run, same client, same flags): the stack's floor for this query
(bench/_me_floor.py): a minimal strawberry schema with strawberry's ParserCache
and ValidationCache and one asyncpg read of the user and balance, no
authentication, on uvicorn with the same options. Also shown: a bare Starlette
route returning {"ok": true} (bench.support.serve_bare), the most any route of a
Starlette app on one uvicorn process can do here.

The load comes from CLIENT_PROCESSES processes of a minimal HTTP/1.1 client
(a pre-built request written, the response read by its Content-Length: a few
µs each, where httpx costs a few hundred), each holding its share of the
connections, so the client is not what limits the figure. To show that, the
server's CPU time over the measured window is printed: a server near 100 % of
one core is the bottleneck; one well below it with idle cores was starved by
its clients. Bare, floor and `me` rounds alternate, each figure is the median of its
rounds, so both see the same background load of the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time

from bench.support import (
    BENCH_ROOT,
    BareServer,
    bench_stack,
    cpu_seconds,
    figure_line,
    median,
    ms,
    percentile,
    signed_in_user,
)

CONNECTIONS = 32
CLIENT_PROCESSES = 2
ROUNDS = 3
WARMUP_SECONDS = 2.0
WINDOW_SECONDS = 5.0
ME_QUERY = "{ me { id email credits } }"


# ------------------------------------------------------------ the load client


def build_request(target: str, token: str) -> bytes:
    if target == "bare":
        return b"GET /ok HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    body = json.dumps({"query": ME_QUERY}).encode()
    head = (
        "POST /graphql HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Content-Type: application/json\r\n"
        f"Authorization: Bearer {token}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def check_response(target: str, head: bytes, body: bytes) -> None:
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"unexpected response: {head[:200]!r} {body[:200]!r}")
    if target == "bare" and body != b'{"ok":true}':
        raise RuntimeError(f"unexpected bare body: {body[:200]!r}")
    if target in ("me", "floor") and (b'"errors"' in body or b'"credits"' not in body):
        raise RuntimeError(f"me query failed: {body[:300]!r}")


async def one_connection(
    port: int, request: bytes, target: str, window: tuple[float, float], latencies: list[float]
) -> None:
    """Requests back to back on one keep-alive connection until the window ends;
    the latency of each answered inside the window is kept."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while True:
            started = time.time()
            if started >= window[1]:
                return
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length_at = head.lower().find(b"\r\ncontent-length:")
            if length_at < 0:
                raise RuntimeError(f"no Content-Length in {head!r}")
            length = int(head[length_at + 17 : head.index(b"\r\n", length_at + 2)])
            body = await reader.readexactly(length)
            answered = time.time()
            check_response(target, head, body)
            if window[0] <= answered < window[1]:
                latencies.append(answered - started)
    finally:
        writer.close()


async def run_load(args: argparse.Namespace) -> None:
    request = build_request(args.target, args.token)
    window = (args.start_at + args.warmup, args.start_at + args.warmup + args.window)
    latencies: list[float] = []
    cpu: dict[str, float] = {}

    async def sample_cpu() -> None:
        await asyncio.sleep(max(0.0, window[0] - time.time()))
        cpu["start"] = time.process_time()
        await asyncio.sleep(max(0.0, window[1] - time.time()))
        cpu["end"] = time.process_time()

    await asyncio.sleep(max(0.0, args.start_at - time.time()))
    await asyncio.gather(
        sample_cpu(),
        *(
            one_connection(args.port, request, args.target, window, latencies)
            for _ in range(args.connections)
        ),
    )
    print(json.dumps({"latencies": latencies, "cpu_seconds": cpu["end"] - cpu["start"]}))


# ------------------------------------------------------------ one measured round


async def measure(target: str, port: int, server_pid: int, token: str = "") -> dict | None:
    """CONNECTIONS connections from CLIENT_PROCESSES processes for WARMUP_SECONDS,
    then WINDOW_SECONDS measured: requests/s, latencies, server and client CPU."""
    start_at = time.time() + 4.0  # after the client processes have imported
    per_process = CONNECTIONS // CLIENT_PROCESSES
    clients = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.me_query",
            "load",
            f"--target={target}",
            f"--port={port}",
            f"--connections={per_process}",
            f"--start-at={start_at}",
            f"--warmup={WARMUP_SECONDS}",
            f"--window={WINDOW_SECONDS}",
            f"--token={token}",
            cwd=BENCH_ROOT,
            stdout=subprocess.PIPE,
        )
        for _ in range(CLIENT_PROCESSES)
    ]
    await asyncio.sleep(max(0.0, start_at + WARMUP_SECONDS - time.time()))
    server_cpu_start = cpu_seconds(server_pid)
    await asyncio.sleep(max(0.0, start_at + WARMUP_SECONDS + WINDOW_SECONDS - time.time()))
    server_cpu = cpu_seconds(server_pid) - server_cpu_start
    latencies: list[float] = []
    client_cpu = 0.0
    for client in clients:
        out, _ = await client.communicate()
        if client.returncode != 0:
            raise RuntimeError(f"load client for {target} failed (exit {client.returncode})")
        result = json.loads(out)
        latencies += result["latencies"]
        client_cpu += result["cpu_seconds"]
    if not latencies:
        return None  # a starved round (clients not started in time): left out
    return {
        "rps": len(latencies) / WINDOW_SECONDS,
        "p50": median(latencies),
        "p99": percentile(latencies, 99),
        "server_cpu": server_cpu / WINDOW_SECONDS,
        "client_cpu": client_cpu / WINDOW_SECONDS,
        "server_cpu_per_request": server_cpu / len(latencies),
    }


def describe(name: str, result: dict) -> str:
    return (
        f"  {name}: {result['rps']:.0f} req/s, p50 {ms(result['p50'])}, "
        f"p99 {ms(result['p99'])}; server CPU {result['server_cpu']:.0%} of a core "
        f"({result['server_cpu_per_request'] * 1e6:.0f} µs a request), "
        f"clients {result['client_cpu']:.0%}"
    )


async def main() -> None:
    from bench._me_floor import MeFloorServer  # here: the load clients need no strawberry
    from tests.harness import GraphQLClient

    async with bench_stack() as stack:
        gql = GraphQLClient(stack.server.base_url)
        try:
            user = await signed_in_user(gql)  # the row exists before the load starts
        finally:
            await gql.aclose()
        bare = BareServer()
        await bare.start()
        floor = MeFloorServer(stack.database_url, str(user.id))
        await floor.start()
        api_pid = stack.server.process.pid
        rounds: dict[str, list[dict]] = {"bare": [], "floor": [], "me": []}
        try:
            for index in range(ROUNDS):
                print(f"round {index + 1}/{ROUNDS}", flush=True)
                for name, target, port, pid in (
                    ("bare route", "bare", bare.port, bare.pid),
                    ("floor     ", "floor", floor.port, floor.pid),
                    ("me query  ", "me", stack.server.port, api_pid),
                ):
                    result = await measure(target, port, pid, token=user.token)
                    print(describe(name, result) if result else f"  {name}: starved", flush=True)
                    if result:
                        rounds[target].append(result)
        finally:
            await bare.stop()
            await floor.stop()

    me_rps = median([r["rps"] for r in rounds["me"]])
    bare_rps = median([r["rps"] for r in rounds["bare"]])
    me_p50 = median([r["p50"] for r in rounds["me"]])
    bare_p50 = median([r["p50"] for r in rounds["bare"]])
    floor_rps = median([r["rps"] for r in rounds["floor"]])
    floor_p50 = median([r["p50"] for r in rounds["floor"]])
    floor_cost = median([r["server_cpu_per_request"] for r in rounds["floor"]])
    me_cost = median([r["server_cpu_per_request"] for r in rounds["me"]])
    bare_cost = median([r["server_cpu_per_request"] for r in rounds["bare"]])
    print(
        f"me query over HTTP, {CONNECTIONS} keep-alive connections from {CLIENT_PROCESSES} "
        f"client processes, median of {ROUNDS} rounds of {WINDOW_SECONDS:.0f} s"
    )
    print(f"  me query:   {me_rps:.0f} req/s, p50 {ms(me_p50)}")
    print(f"  floor:      {floor_rps:.0f} req/s, p50 {ms(floor_p50)}")
    print(f"  bare route: {bare_rps:.0f} req/s, p50 {ms(bare_p50)}")
    print(
        f"  server CPU a request: me {me_cost * 1e6:.0f} µs, floor {floor_cost * 1e6:.0f} µs, "
        f"bare {bare_cost * 1e6:.0f} µs ({floor_cost / me_cost:.3g}x the floor by CPU, "
        "independent of the machine's other load)"
    )
    print(
        f"me_query: {me_rps:.0f} req/s (p50 {ms(me_p50)}), {me_rps / floor_rps:.3g}x the "
        f"stack's floor ({floor_rps:.0f} req/s), {me_rps / bare_rps:.3g}x a bare Starlette "
        f"route ({bare_rps:.0f} req/s)"
    )
    print(figure_line("me_query_rps", me_rps, "req/s", floor_rps, me_rps / floor_rps))
    print(figure_line("me_query_p50", me_p50 * 1000, "ms", floor_p50 * 1000, me_p50 / floor_p50))
    print(
        figure_line(
            "me_query_cpu_per_request",
            me_cost * 1e6,
            "us",
            floor_cost * 1e6,
            me_cost / floor_cost,
        )
    )
    print(figure_line("me_query_rps_vs_bare", me_rps, "req/s", bare_rps, me_rps / bare_rps))


def parse_load_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench.me_query load")
    parser.add_argument("--target", choices=["bare", "floor", "me"], required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--connections", type=int, required=True)
    parser.add_argument("--start-at", type=float, required=True)
    parser.add_argument("--warmup", type=float, required=True)
    parser.add_argument("--window", type=float, required=True)
    parser.add_argument("--token", default="")
    return parser.parse_args(argv)


if __name__ == "__main__":
    if sys.argv[1:2] == ["load"]:
        # A load client process (see measure); uvloop as the servers use it.
        import uvloop

        uvloop.run(run_load(parse_load_args(sys.argv[2:])))
    else:
        asyncio.run(main())
