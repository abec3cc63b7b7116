"""Hostile documents: what one costs, and what four clients sending them do to
everyone else (issue 13).

- hostile_document_cpu: CPU (in this process, through the whole schema) to
  refuse the costliest of a set of hostile documents, each with a fresh
  comment so no cache helps (`{ me { id id ... } }` with 4,990 ids and friends; before the
  request gate they cost 0.06-1.5 s each). Baseline: `{ __typename }` with a
  fresh comment, which is parsed and validated every time too.
- health_p50_under_*_flood: /health latency while four clients (another
  process, keep-alive, each sending as soon as its last answer came) send
  hostile documents, anonymously (the anonymous rate limit answers most of
  them) or signed in (every one goes through the document gate). Baseline:
  the same four clients sending signed-in `{ __typename }`. Target: within
  5x the baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
import uuid
from collections import Counter

import httpx

from bench.support import bench_stack, figure_line, median

FLOODERS = 4
FLOOD_SECONDS = 8.0
PROBE_INTERVAL = 0.02
HOSTILE = {
    "4990 ids": "{ me { " + "id " * 4990 + "} }",
    "repeated root field": "{ " + "me { id } " * 1200 + "}",
    "inline fragments": "{ me { " + "... on User { id } " * 800 + "} }",
    "aliases through doubling fragments": "".join(
        f"fragment F{i} on Query {{ a: me {{ id }} ...F{i + 1} b: __typename ...F{i + 1} }} "
        for i in range(20)
    )
    + "fragment F20 on Query { me { id } } { ...F0 }",
    "conflicting fields": "{ me { "
    + " ".join("id: email" if i % 2 else "id" for i in range(1600))
    + " } }",
    "2000 unknown fields": "{ me { " + " ".join(f"f{i}" for i in range(2000)) + " } }",
    "1200 variables": "query(" + " ".join(f"$v{i}: Int" for i in range(1200)) + ") { me { id } }",
}
FLOOD_DOCUMENT = HOSTILE["4990 ids"]


def _fresh(document: str) -> str:
    return f"# {uuid.uuid4()}\n{document}"


async def _document_cpu() -> tuple[dict[str, float], float]:
    """CPU seconds to answer each hostile document, and `{ __typename }`."""
    from types import SimpleNamespace

    from app.context import Context
    from app.settings import get_settings
    from resolvers.loaders import Loaders
    from resolvers.root import build_schema

    settings = get_settings()
    schema = build_schema(settings)

    async def cpu(document: str) -> float:
        best = float("inf")
        for _ in range(5):
            context = Context(
                request=None,
                response=None,
                services=SimpleNamespace(settings=settings),
                loaders=Loaders(),
            )
            started = time.process_time()
            result = await schema.execute(_fresh(document), context_value=context)
            best = min(best, time.process_time() - started)
        return best, result

    costs = {}
    for name, document in HOSTILE.items():
        costs[name], result = await cpu(document)
        codes = {e.extensions.get("code") for e in result.errors or []}
        assert codes == {"QUERY_TOO_COMPLEX"}, (name, result.errors)
    floor, _ = await cpu("{ __typename }")
    return costs, floor


def flood(url: str, token: str | None, document: str, seconds: float) -> None:
    """The flooders (run in their own process): FLOODERS clients for `seconds`."""

    async def one(client: httpx.AsyncClient, statuses: Counter) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        stop = time.monotonic() + seconds
        while time.monotonic() < stop:
            response = await client.post(
                "/graphql", json={"query": _fresh(document)}, headers=headers
            )
            statuses[response.status_code] += 1

    async def main() -> None:
        statuses: Counter = Counter()
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            await asyncio.gather(*(one(client, statuses) for _ in range(FLOODERS)))
        print(dict(statuses), flush=True)

    asyncio.run(main())


async def _health_under(url: str, token: str | None, document: str) -> tuple[float, str]:
    """/health p50 while the flooders run, and what they were answered."""
    command = [sys.executable, "-m", "bench.abuse_flood", "--flood", url, document]
    if token:
        command += ["--token", token]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)  # noqa: ASYNC220
    samples = []
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        await asyncio.sleep(1.0)  # let the flood build up
        stop = time.monotonic() + FLOOD_SECONDS - 2.0
        while time.monotonic() < stop:
            started = time.perf_counter()
            assert (await client.get("/health")).status_code == 200
            samples.append(time.perf_counter() - started)
            await asyncio.sleep(PROBE_INTERVAL)
    answered, _ = await asyncio.to_thread(process.communicate)
    return median(samples), answered.strip()


async def main() -> None:
    from app.auth import issue_jwt
    from app.settings import get_settings

    async with bench_stack() as stack:
        token = issue_jwt(get_settings(), uuid.uuid4(), "flood@example.com")
        url = stack.server.base_url
        async with httpx.AsyncClient(base_url=url) as client:
            await client.post(
                "/graphql",
                json={"query": "{ me { id } }"},
                headers={"Authorization": f"Bearer {token}"},
            )
        costs, floor_cpu = await _document_cpu()
        floor, floor_answers = await _health_under(url, token, "{ __typename }")
        anonymous, anonymous_answers = await _health_under(url, None, FLOOD_DOCUMENT)
        signed_in, signed_in_answers = await _health_under(url, token, FLOOD_DOCUMENT)

    worst = max(costs, key=costs.get)
    print("CPU to refuse each hostile document (fresh text each time):")
    for name, seconds in costs.items():
        print(f"  {name:36s} {seconds * 1000:7.2f} ms")
    print(f"  {'{ __typename } (parsed and validated)':36s} {floor_cpu * 1000:7.2f} ms")
    print(f"/health p50 under {FLOODERS} flooders, {FLOOD_SECONDS:.0f} s each:")
    print(f"  signed-in {{ __typename }}:   {floor * 1000:7.2f} ms  answers {floor_answers}")
    print(f"  anonymous hostile:          {anonymous * 1000:7.2f} ms  answers {anonymous_answers}")
    print(f"  signed-in hostile:          {signed_in * 1000:7.2f} ms  answers {signed_in_answers}")
    print(
        figure_line(
            "hostile_document_cpu",
            costs[worst] * 1000,
            "ms",
            floor_cpu * 1000,
            costs[worst] / floor_cpu,
        )
    )
    for name, value in (("anonymous", anonymous), ("signed_in", signed_in)):
        print(
            figure_line(
                f"health_p50_under_{name}_hostile_flood",
                value * 1000,
                "ms",
                floor * 1000,
                value / floor,
            )
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--flood", nargs=2, metavar=("URL", "DOCUMENT"))
    parser.add_argument("--token")
    args = parser.parse_args()
    if args.flood:
        flood(args.flood[0], args.token, args.flood[1], FLOOD_SECONDS)
    else:
        asyncio.run(main())
