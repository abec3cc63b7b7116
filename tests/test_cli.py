"""The commands a newcomer runs: `agentgraph dev` and `agentgraph token`."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys

import httpx
import jwt

from tests.conftest import TEST_ENV
from tests.harness import ROOT, free_port, graphql_ws


def test_token_prints_a_jwt_the_server_accepts(settings):
    user_id = "3f6c2a1e-9a7b-4c1d-8e2f-0a1b2c3d4e5f"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "app.cli",
            "token",
            "--email",
            "ops@example.com",
            "--user-id",
            user_id,
            "--admin",
        ],
        cwd=ROOT,
        env={**os.environ, **TEST_ENV},
        capture_output=True,
        text=True,
        check=True,
    )
    claims = jwt.decode(
        result.stdout.strip(),
        settings.JWT_SECRET,
        algorithms=["HS256"],
        audience=settings.JWT_AUDIENCE,
    )
    assert claims["sub"] == user_id and claims["email"] == "ops@example.com"
    assert claims["role"] == "admin"


async def test_dev_runs_api_and_worker_on_sqlite_and_prints_a_working_token(tmp_path):
    port = free_port()
    env = {
        **os.environ,
        # What a newcomer has: no settings at all, except where the data goes.
        "DATABASE_URL": f"sqlite://{tmp_path}/dev.sqlite3",
        "REDIS_PREFIX": TEST_ENV["REDIS_PREFIX"] + "dev:",
        "PYTHONUNBUFFERED": "1",
    }
    for name in (
        "ENVIRONMENT",
        "JWT_SECRET",
        "API_KEY_PEPPER",
        "CREDENTIALS_ENCRYPTION_KEY",
        "STARTING_CREDITS",
        "LOG_LEVEL",
    ):
        env.pop(name, None)
    log_path = tmp_path / "dev.log"
    with log_path.open("wb") as log:
        dev = subprocess.Popen(  # noqa: ASYNC220 - a long-lived child
            [sys.executable, "-m", "app.cli", "dev", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        token = None
        for _ in range(300):
            match = re.search(r"Headers:\s+(\{.*\})", log_path.read_text())
            if match:
                token = json.loads(match.group(1))["Authorization"].removeprefix("Bearer ")
                break
            await asyncio.sleep(0.1)
        assert token, log_path.read_text()
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base) as client:
            for _ in range(200):
                try:
                    if (await client.get("/health")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
            page = await client.get("/graphql", headers={"Accept": "text/html"})
            assert "GraphiQL" in page.text
            me = await client.post(
                "/graphql",
                json={"query": "{ me { email credits } }"},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert me.json() == {"data": {"me": {"email": "demo@agentgraph.local", "credits": 0}}}
        async with graphql_ws(
            f"ws://127.0.0.1:{port}/graphql", {"Authorization": f"Bearer {token}"}
        ) as ws:
            messages = await ws.request("{ me { email } }")
        assert messages[0]["payload"]["data"]["me"]["email"] == "demo@agentgraph.local"
        for _ in range(100):
            if "worker started" in log_path.read_text():
                break
            await asyncio.sleep(0.1)
        assert "worker started" in log_path.read_text()
    finally:
        dev.send_signal(signal.SIGINT)
        try:
            code = await asyncio.to_thread(dev.wait, 30)
        except subprocess.TimeoutExpired:
            os.killpg(dev.pid, signal.SIGKILL)
            raise
    assert code == 0
    # Nothing of the process group is left behind.
    await asyncio.sleep(0.5)
    leftover = await asyncio.to_thread(
        subprocess.run, ["pgrep", "-g", str(dev.pid)], capture_output=True, text=True
    )
    assert leftover.stdout.strip() == "", leftover.stdout
