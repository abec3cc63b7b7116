"""`agentgraph worker`: starts, answers --check, runs jobs, stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from datetime import timedelta

from app.clients.redis import create_redis
from app.clock import utcnow
from app.models import ProcessedStripeEvent
from tests.conftest import TEST_ENV
from tests.harness import ROOT


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "app.cli", *args]


async def _wait_for(predicate, timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.1)


async def test_worker_runs_a_job_and_stops_cleanly(database, settings, tmp_path):
    old = await ProcessedStripeEvent.create(id=f"evt_old_{uuid.uuid4().hex}", type="x")
    await ProcessedStripeEvent.filter(id=old.id).update(received_at=utcnow() - timedelta(days=31))
    recent = await ProcessedStripeEvent.create(id=f"evt_new_{uuid.uuid4().hex}", type="x")

    log_path = tmp_path / "worker.log"
    env = {**os.environ, **TEST_ENV, "LOG_LEVEL": "INFO"}
    with log_path.open("wb") as log:
        worker = subprocess.Popen(  # noqa: ASYNC220 - a long-lived child
            _cli("worker"), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    redis = create_redis(settings)
    try:
        job = await redis.enqueue_job("prune_processed_stripe_events")
        assert await job.result(timeout=30) == 1
        assert not await ProcessedStripeEvent.filter(id=old.id).exists()
        assert await ProcessedStripeEvent.filter(id=recent.id).exists()

        async def healthy() -> bool:
            check = await asyncio.create_subprocess_exec(
                *_cli("worker", "--check"),
                cwd=ROOT,
                env=env,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            return await check.wait() == 0

        await _wait_for(healthy)
        worker.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(worker.wait, 20) == 0
        assert "worker stopped" in log_path.read_text()
    finally:
        if worker.poll() is None:
            worker.kill()
        await redis.aclose()


async def test_worker_starts_and_stops_with_no_jobs(database, tmp_path):
    env = {**os.environ, **TEST_ENV, "LOG_LEVEL": "INFO"}
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log:
        worker = subprocess.Popen(  # noqa: ASYNC220
            _cli("worker"), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:

        async def started() -> bool:
            return "worker started" in log_path.read_text()

        await _wait_for(started)
        # At once: its lanes are still starting (a wake-up landing as a lane was
        # stopped used to swallow the stop, and the worker never exited).
        worker.send_signal(signal.SIGINT)
        assert await asyncio.to_thread(worker.wait, 20) == 0, log_path.read_text()[-4000:]
        assert "worker stopped" in log_path.read_text()
    finally:
        if worker.poll() is None:
            worker.kill()
