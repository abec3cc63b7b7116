"""Azurite, Microsoft's Azure Blob Storage emulator, as a real server for the tests.

`make install` puts the pinned npm package in `.npm-tools/`; the server is run
directly (not through npx, whose wrapper would outlive a kill) on a free port,
in memory, from a scratch directory it may litter.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import httpx
from azure.storage.blob.aio import ContainerClient

from tests.harness import ROOT, free_port

AZURITE_BLOB = ROOT / ".npm-tools" / "node_modules" / ".bin" / "azurite-blob"
# Azurite's well-known development account (public, documented by Microsoft).
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


class Azurite:
    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.workdir = Path(tempfile.mkdtemp(prefix="agentgraph-azurite-"))

    @property
    def blob_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/{ACCOUNT}"

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint={self.blob_endpoint};"
        )

    async def start(self, timeout: float = 30.0) -> None:
        if not AZURITE_BLOB.exists():
            raise RuntimeError(f"{AZURITE_BLOB} is missing: run `make install`")
        self.process = subprocess.Popen(  # noqa: ASYNC220 - starts, never waits
            [
                str(AZURITE_BLOB),
                "--silent",
                "--inMemoryPersistence",
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                str(self.port),
                "--skipApiVersionCheck",
                "--disableTelemetry",
            ],
            cwd=self.workdir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = asyncio.get_running_loop().time() + timeout
        async with httpx.AsyncClient() as client:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError("Azurite exited early")
                try:
                    # Any HTTP answer (403 without a signature) means it is listening.
                    await client.get(self.blob_endpoint + "?comp=list")
                    return
                except httpx.TransportError:
                    pass
                if asyncio.get_running_loop().time() > deadline:
                    raise RuntimeError("Azurite did not start")
                await asyncio.sleep(0.1)

    async def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.process.wait, 10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)

    async def blob_names(self, container: str, prefix: str = "") -> list[str]:
        """Every blob under `prefix`, uncommitted ones (staged blocks only) included."""
        async with ContainerClient.from_connection_string(
            self.connection_string, container
        ) as client:
            if not await client.exists():
                return []
            return [
                blob.name
                async for blob in client.list_blobs(
                    name_starts_with=prefix, include=["uncommittedblobs"]
                )
            ]
