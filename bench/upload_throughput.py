"""POST /api/files with a 50 MB file into Azurite: throughput and the API's peak memory.

Baseline (same run, same Azurite, same bytes): the SDK writing the file straight
to a blob from this process, the storage floor an upload through the API
cannot beat. Memory is the API process's peak resident set (VmHWM) minus its
resident set when idle before the uploads: what streaming the file cost. It
must stay well below the file's size, since the file is never held whole.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time

import httpx

from bench.support import bench_stack, figure_line

FILE_MB = 50
RUNS = 3
MIB = 1024 * 1024


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used (from /proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _status_mb(pid: int, field: str) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for {pid}")


async def main() -> None:
    from azure.storage.blob.aio import ContainerClient

    from app.auth import issue_jwt
    from app.settings import get_settings
    from tests.azurite import Azurite
    from tests.harness import ApiServer

    data = os.urandom(FILE_MB * MIB)
    azurite = Azurite()
    await azurite.start()
    try:
        async with bench_stack(start_api=False) as stack:
            container = "bench-uploads"
            server = ApiServer(
                stack.env,
                {
                    "AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string,
                    "AZURE_STORAGE_CONTAINER": container,
                },
            )
            await server.start()
            try:
                token = issue_jwt(get_settings(), "00000000-0000-4000-8000-000000000001", "b@x.io")
                idle_rss = _status_mb(server.process.pid, "VmRSS")
                api_cpu = _cpu_seconds(server.process.pid)
                azurite_cpu = _cpu_seconds(azurite.process.pid)
                api_seconds = []
                async with httpx.AsyncClient(base_url=server.base_url, timeout=300) as client:
                    for _ in range(RUNS):
                        started = time.perf_counter()
                        response = await client.post(
                            "/api/files",
                            files={"file": ("big.bin", data, "application/octet-stream")},
                            headers={"Authorization": f"Bearer {token}"},
                        )
                        api_seconds.append(time.perf_counter() - started)
                        assert response.status_code == 200, response.text
                        assert response.json()["size"] == len(data)
                peak_rss = _status_mb(server.process.pid, "VmHWM")
                # Where the time goes on a shared machine: the API's own work vs Azurite's.
                api_cpu = (_cpu_seconds(server.process.pid) - api_cpu) / RUNS
                azurite_cpu = (_cpu_seconds(azurite.process.pid) - azurite_cpu) / RUNS
            finally:
                await server.stop()

            raw_seconds = []
            async with ContainerClient.from_connection_string(
                azurite.connection_string, container
            ) as raw:
                for index in range(RUNS):
                    started = time.perf_counter()
                    await raw.upload_blob(f"raw/{index}.bin", data, overwrite=True)
                    raw_seconds.append(time.perf_counter() - started)
    finally:
        await azurite.stop()

    api_rate = FILE_MB / statistics.median(api_seconds)
    raw_rate = FILE_MB / statistics.median(raw_seconds)
    grown = max(0.0, peak_rss - idle_rss)
    print(f"upload of a {FILE_MB} MiB file, {RUNS} runs each, into Azurite")
    print(f"  POST /api/files: {api_rate:.1f} MB/s (median of {RUNS})")
    print(f"  SDK upload_blob baseline: {raw_rate:.1f} MB/s")
    print(f"  CPU per upload: API {api_cpu:.2f} s, Azurite {azurite_cpu:.2f} s")
    print(f"  API RSS: idle {idle_rss:.0f} MiB, peak {peak_rss:.0f} MiB, +{grown:.1f} MiB")
    print(figure_line("upload_mb_per_s", api_rate, "MB/s", raw_rate, api_rate / raw_rate))
    print(figure_line("upload_peak_rss_mb", grown, "MB", FILE_MB, grown / FILE_MB))


if __name__ == "__main__":
    asyncio.run(main())
