"""Notification email latency: a run ends -> its email is in the inbox.

A real worker runs an echo graph (every run counts as long:
LONG_RUN_NOTIFY_SECONDS=0, so each one notifies its owner); the notification
is stored, its `send_notification_email` job enqueued, picked up and sent
through aiosmtplib to a local aiosmtpd server in this process, which stamps
the arrival. Latency = arrival - the run's stored endedAt (one machine, one
clock), one run at a time.

Baseline (same run, same server): aiosmtplib sending a mail of the same size
straight to that server, the least any email can cost.
"""

from __future__ import annotations

import asyncio
import os
import time
from datetime import datetime
from email.message import EmailMessage

import aiosmtplib
from aiosmtpd.controller import Controller

from bench.support import bench_stack, figure_line, median, ms, signed_in_user, wait_until_ended

WARMUP, RUNS = 3, 30


class Inbox:
    def __init__(self) -> None:
        self.arrivals: dict[str, float] = {}

    async def handle_DATA(self, server, session, envelope) -> str:
        text = envelope.content.decode(errors="replace")
        subject = next(
            (line[9:].strip() for line in text.splitlines() if line.startswith("Subject: ")), ""
        )
        self.arrivals[subject] = time.time()
        return "250 OK"

    async def wait_for(self, subject: str, timeout: float = 60.0) -> float:
        deadline = time.monotonic() + timeout
        while subject not in self.arrivals:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no mail {subject!r}")
            await asyncio.sleep(0.002)
        return self.arrivals[subject]


async def direct_sends(port: int, size: int, runs: int) -> list[float]:
    samples = []
    for index in range(runs):
        message = EmailMessage()
        message["From"] = "bench@example.com"
        message["To"] = "someone@example.com"
        message["Subject"] = f"baseline {index}"
        message.set_content("x" * size)
        started = time.perf_counter()
        await aiosmtplib.send(message, hostname="127.0.0.1", port=port)
        samples.append(time.perf_counter() - started)
    return samples


async def main() -> None:
    from tests.execution_helpers import GET_EXECUTION, execute
    from tests.graph_builders import create_graph, echo_graph
    from tests.harness import GraphQLClient, free_port
    from tests.notification_helpers import set_preferences

    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    os.environ.update({"SMTP_URL": f"smtp://127.0.0.1:{port}", "LONG_RUN_NOTIFY_SECONDS": "0"})
    latencies = []
    try:
        async with bench_stack(start_worker=True) as stack:
            gql = GraphQLClient(stack.server.base_url)
            try:
                user = await signed_in_user(gql)
                await set_preferences(gql, user, dailyLimit=1000)
                graph = await create_graph(gql, user, echo_graph("bench"))
                for index in range(WARMUP + RUNS):
                    started = await execute(gql, user, graph["id"], {"text": str(index)})
                    assert await wait_until_ended(gql, user, started["id"]) == "COMPLETED"
                    data = await gql.ok(GET_EXECUTION, {"id": started["id"]}, token=user.token)
                    ended = datetime.fromisoformat(data["execution"]["endedAt"]).timestamp()
                    arrived = await inbox.wait_for("Your run of bench finished")
                    inbox.arrivals.clear()
                    if index >= WARMUP:
                        latencies.append(arrived - ended)
            finally:
                await gql.aclose()
        baseline_samples = await direct_sends(port, 2000, RUNS)
    finally:
        controller.stop()
    latency, baseline = median(latencies), median(baseline_samples)
    print(f"notification email: {RUNS} runs, one at a time")
    print(f"  run end -> mail arrived: p50 {ms(latency)}, max {ms(max(latencies))}")
    print(f"  aiosmtplib straight to the server: p50 {ms(baseline)}")
    print(
        figure_line(
            "notification_email_p50",
            latency * 1000,
            "ms",
            baseline * 1000,
            latency / baseline,
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
