"""Azure Blob Storage through the SDK's asyncio client (`AZURE_STORAGE_CONNECTION_STRING`).

Uploads are staged as blocks while the bytes arrive and committed at the end,
so memory holds a few blocks however large the file is, and a blob becomes
visible only when it is whole. Read URLs are SAS tokens signed with the
account key, so the connection string must carry `AccountKey`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterable
from datetime import datetime
from types import TracebackType
from urllib.parse import unquote, urlsplit

from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobBlock, BlobSasPermissions, ContentSettings, generate_blob_sas
from azure.storage.blob.aio import BlobClient, BlobServiceClient

# Each staged block is one request. Peak memory per upload is a few times
# BLOCK_BYTES x BLOCKS_IN_FLIGHT (bench/upload_throughput.py: about +11 MiB for a
# 50 MiB file with 1 MiB x 4, +26 MiB with 4 MiB x 2, at the same throughput).
BLOCK_BYTES = 1024 * 1024
# Blocks uploading at once while the next ones are read.
BLOCKS_IN_FLIGHT = 4

log = logging.getLogger(__name__)

# The SDK logs every request at INFO; that is noise in a worker's log.
logging.getLogger("azure.core.pipeline.policies.http_logging_policy").setLevel(logging.WARNING)

StorageError = AzureError


class BlobStorage:
    """One container of one account. Use as `async with BlobStorage(...) as storage:`."""

    def __init__(self, connection_string: str, container: str) -> None:
        self.service = BlobServiceClient.from_connection_string(
            connection_string, retry_total=3, connection_timeout=10
        )
        self.container = self.service.get_container_client(container)
        self._account_key: str | None = getattr(self.service.credential, "account_key", None)
        self._container_ready = False

    async def __aenter__(self) -> BlobStorage:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.container.close()
        await self.service.close()

    async def ensure_container(self) -> None:
        if self._container_ready:
            return
        with contextlib.suppress(ResourceExistsError):
            await self.container.create_container()
        self._container_ready = True

    def blob(self, blob_name: str) -> BlobClient:
        return self.container.get_blob_client(blob_name)

    async def upload_stream(
        self,
        blob_name: str,
        chunks: AsyncIterable[bytes],
        *,
        content_type: str,
        content_disposition: str | None = None,
    ) -> int:
        """Write `chunks` to a new block blob; returns its size.

        If anything fails (including `chunks` raising, e.g. a size limit), the
        staged blocks are discarded and nothing is left under `blob_name`.
        """
        await self.ensure_container()
        blob = self.blob(blob_name)
        block_ids: list[str] = []
        in_flight: set[asyncio.Task] = set()
        # Chunks wait in a list and are joined once per block: one copy of each byte.
        pending: list[bytes] = []
        pending_bytes = 0
        size = 0
        try:
            async for chunk in chunks:
                pending.append(chunk)
                pending_bytes += len(chunk)
                size += len(chunk)
                if pending_bytes >= BLOCK_BYTES:
                    block, pending, pending_bytes = b"".join(pending), [], 0
                    await self._stage(blob, block_ids, block, in_flight)
                    del block
            if pending:
                await self._stage(blob, block_ids, b"".join(pending), in_flight)
                pending = []
            if in_flight:
                await asyncio.gather(*in_flight)
            await blob.commit_block_list(
                [BlobBlock(block_id=block_id) for block_id in block_ids],
                content_settings=ContentSettings(
                    content_type=content_type, content_disposition=content_disposition
                ),
            )
        except BaseException:
            await asyncio.shield(self._abandon(blob, block_ids, in_flight))
            raise
        return size

    async def _stage(
        self, blob: BlobClient, block_ids: list[str], data: bytes, in_flight: set[asyncio.Task]
    ) -> None:
        while len(in_flight) >= BLOCKS_IN_FLIGHT:
            done, _ = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
            in_flight.difference_update(done)
            for task in done:
                task.result()  # re-raises a failed block
        # Every block id of a blob must have the same length.
        block_id = f"{len(block_ids):08d}"
        block_ids.append(block_id)
        in_flight.add(asyncio.create_task(blob.stage_block(block_id, data, length=len(data))))

    async def _abandon(
        self, blob: BlobClient, block_ids: list[str], in_flight: set[asyncio.Task]
    ) -> None:
        """Leave nothing of a failed upload behind.

        Blocks still uploading are waited for, not cancelled: a cancelled request
        may already be at the server and land after the discard. Then committing
        an empty list drops every uncommitted block (rather than leaving them for
        Azure's week-long clean-up) and the empty blob is deleted."""
        await asyncio.gather(*in_flight, return_exceptions=True)
        if not block_ids:
            return
        try:
            await blob.commit_block_list([])
            await blob.delete_blob()
        except AzureError:
            log.warning("could not discard staged blocks of %s", blob.blob_name, exc_info=True)

    def read_url(self, blob_name: str, expires_at: datetime) -> str:
        """A URL that can only read this blob, until `expires_at`."""
        if not self._account_key:
            raise ValueError("AZURE_STORAGE_CONNECTION_STRING needs an AccountKey to sign URLs")
        sas = generate_blob_sas(
            account_name=self.service.account_name,
            container_name=self.container.container_name,
            blob_name=blob_name,
            account_key=self._account_key,
            permission=BlobSasPermissions(read=True),
            expiry=expires_at,
        )
        return f"{self.blob(blob_name).url}?{sas}"

    def blob_name_of(self, url: str) -> str | None:
        """The blob name a URL of this container points at; None for any other URL."""
        try:
            target = urlsplit(url.strip())
            own = urlsplit(self.container.url)
        except ValueError:
            return None
        if (target.scheme.lower(), target.netloc.lower()) != (
            own.scheme.lower(),
            own.netloc.lower(),
        ):
            return None
        prefix = own.path.rstrip("/") + "/"
        if not target.path.startswith(prefix):
            return None
        return unquote(target.path[len(prefix) :]) or None

    async def read(self, blob_name: str, max_bytes: int) -> bytes | None:
        """The blob's bytes; None when it does not exist. ValueError past `max_bytes`."""
        try:
            download = await self.blob(blob_name).download_blob()
        except ResourceNotFoundError:
            return None
        if download.size > max_bytes:
            raise ValueError(f"file is {download.size} bytes, more than {max_bytes}")
        return await download.readall()

    async def delete(self, blob_name: str) -> bool:
        """Delete a blob; False when it was already gone (so deletion can repeat)."""
        try:
            await self.blob(blob_name).delete_blob()
        except ResourceNotFoundError:
            return False
        return True
