"""Uploaded files (SEMANTICS.md §10): limits, names, scanning, storage, reading, expiry.

An upload streams through here once: counted against the size limit as it
arrives, scanned by clamd when `CLAMD_ADDRESS` is set (spooled to a temporary
file first, since nothing may be stored before the verdict), then staged into
Azure Blob Storage block by block, or, without a connection string, returned
inline as a `data:` URI. Memory holds a few blocks, never the file.

Stored files are tracked by an `UploadedFile` row written before the first
byte goes to storage, so a crash mid-upload leaves a row the expiry job still
finds, never an untracked blob.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import re
import tempfile
import unicodedata
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import IO, Any
from urllib.parse import unquote_to_bytes

from app.clients.blob_storage import BlobStorage, StorageError
from app.clients.clamd import ClamdClient, ClamdStreamTooLarge, ClamdUnavailable
from app.clock import utcnow
from app.errors import AppError, ErrorCode, bad_input, not_found
from app.models import UploadedFile
from app.settings import Settings

log = logging.getLogger(__name__)

MIB = 1024 * 1024
MIN_EXPIRATION_HOURS, MAX_EXPIRATION_HOURS, DEFAULT_EXPIRATION_HOURS = 1, 48, 24
MAX_FILE_NAME_CHARS = 100
DEFAULT_FILE_NAME = "file"
DEFAULT_CONTENT_TYPE = "application/octet-stream"
# Spooling (for the scan) writes and reads the temporary file this much at a time.
SPOOL_CHUNK_BYTES = MIB
# The expiry job deletes this many files per database round trip.
EXPIRY_BATCH = 200

_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_HOURS = re.compile(r"[0-9]{1,3}")
_CONTENT_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}$")


class UploadError(AppError):
    """An upload refused with an HTTP status of its own (413, 503) beside its code."""

    def __init__(self, status: int, code: ErrorCode, message: str) -> None:
        super().__init__(code, message)
        self.status = status


def upload_too_large(limit: int) -> UploadError:
    return UploadError(413, ErrorCode.BAD_USER_INPUT, f"File larger than {limit} bytes")


def unavailable(what: str) -> UploadError:
    return UploadError(503, ErrorCode.INTERNAL, f"{what} is unavailable; try again later")


# --- limits and names ---------------------------------------------------------


def data_uri_limit_bytes(settings: Settings) -> int:
    """The largest file returned as a data: URI. Its base64 form (4/3 the size)
    must fit, with room to spare, in a GraphQL request (`MAX_BODY_BYTES`), or
    the URI could not be passed to executeGraph."""
    return min(settings.UPLOAD_MAX_MB * MIB, settings.MAX_BODY_BYTES // 2)


def upload_limit_bytes(settings: Settings) -> int:
    if settings.AZURE_STORAGE_CONNECTION_STRING:
        return settings.UPLOAD_MAX_MB * MIB
    return data_uri_limit_bytes(settings)


def expiration_hours(raw: str | None) -> int:
    """`expiration_hours` from the query string: a whole number of hours, 1..48."""
    if raw is None or raw == "":
        return DEFAULT_EXPIRATION_HOURS
    value = raw.strip()
    # ASCII digits only: str.isdigit() also takes "²" (which int() refuses) and "٣".
    if (
        not _HOURS.fullmatch(value)
        or not MIN_EXPIRATION_HOURS <= int(value) <= MAX_EXPIRATION_HOURS
    ):
        raise bad_input(
            f"expiration_hours must be a whole number from {MIN_EXPIRATION_HOURS} "
            f"to {MAX_EXPIRATION_HOURS}",
            field="expiration_hours",
        )
    return int(value)


def safe_file_name(raw: str | None) -> str:
    """The client's file name made safe for a blob path, a URL and a download header:
    no directories, ASCII letters, digits, `.`, `_` and `-` only, no leading dot,
    at most MAX_FILE_NAME_CHARS characters (the extension kept when cut)."""
    name = (raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    # Accented letters keep their base letter (é -> e) rather than vanish.
    name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    name = _UNSAFE_NAME_CHARS.sub("_", name).strip("._-")
    if len(name) > MAX_FILE_NAME_CHARS:
        stem, dot, extension = name.rpartition(".")
        if dot and 0 < len(extension) <= 16:
            name = stem[: MAX_FILE_NAME_CHARS - len(extension) - 1].rstrip("._-") + "." + extension
        else:
            name = name[:MAX_FILE_NAME_CHARS].rstrip("._-")
    return name or DEFAULT_FILE_NAME


def safe_content_type(raw: str | None) -> str:
    """`type/subtype` from the part's Content-Type (parameters dropped); octet-stream
    when it is missing or not a media type."""
    value = (raw or "").split(";", 1)[0].strip().lower()
    return value if _CONTENT_TYPE.match(value) else DEFAULT_CONTENT_TYPE


# --- uploading ------------------------------------------------------------------


@dataclass
class IncomingFile:
    """A file part as the client sent it; `chunks` yields its bytes as they arrive."""

    name: str | None
    content_type: str | None
    chunks: AsyncIterator[bytes]


@dataclass(frozen=True)
class StoredFile:
    file_uri: str
    file_name: str
    size: int
    content_type: str
    expires_in_hours: int

    def as_json(self) -> dict[str, Any]:
        return {
            "file_uri": self.file_uri,
            "file_name": self.file_name,
            "size": self.size,
            "content_type": self.content_type,
            "expires_in_hours": self.expires_in_hours,
        }


async def store_upload(
    settings: Settings, user_id: uuid.UUID, incoming: IncomingFile, hours: int
) -> StoredFile:
    """Count, scan and store one upload; raises UploadError/AppError and keeps nothing
    when the file is too large, infected, or a service it needs is down."""
    name = safe_file_name(incoming.name)
    content_type = safe_content_type(incoming.content_type)
    chunks = _limited(incoming.chunks, upload_limit_bytes(settings))
    if not settings.AZURE_STORAGE_CONNECTION_STRING:
        data = b"".join([chunk async for chunk in chunks])
        if settings.CLAMD_ADDRESS:
            await _scan(settings, user_id, _single(data))
        uri = f"data:{content_type};base64,{base64.b64encode(data).decode('ascii')}"
        return StoredFile(uri, name, len(data), content_type, hours)
    if not settings.CLAMD_ADDRESS:
        return await _store_blob(settings, user_id, name, content_type, chunks, hours)
    with tempfile.TemporaryFile(prefix="agentgraph-upload-") as spool:
        await _spool(chunks, spool)
        await _scan(settings, user_id, _read_spool(spool))
        return await _store_blob(settings, user_id, name, content_type, _read_spool(spool), hours)


async def _limited(chunks: AsyncIterator[bytes], limit: int) -> AsyncIterator[bytes]:
    """`chunks`, refused with 413 the moment they pass `limit` bytes."""
    seen = 0
    async for chunk in chunks:
        seen += len(chunk)
        if seen > limit:
            raise upload_too_large(limit)
        yield chunk


async def _single(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _spool(chunks: AsyncIterator[bytes], spool: IO[bytes]) -> None:
    buffer = bytearray()
    async for chunk in chunks:
        buffer += chunk
        if len(buffer) >= SPOOL_CHUNK_BYTES:
            await asyncio.to_thread(spool.write, bytes(buffer))
            buffer.clear()
    if buffer:
        await asyncio.to_thread(spool.write, bytes(buffer))


async def _read_spool(spool: IO[bytes]) -> AsyncIterator[bytes]:
    await asyncio.to_thread(spool.seek, 0)
    while chunk := await asyncio.to_thread(spool.read, SPOOL_CHUNK_BYTES):
        yield chunk


async def _scan(settings: Settings, user_id: uuid.UUID, chunks: AsyncIterator[bytes]) -> None:
    try:
        verdict = await ClamdClient(settings.CLAMD_ADDRESS or "").scan(chunks)
    except ClamdStreamTooLarge as exc:
        raise UploadError(
            413, ErrorCode.BAD_USER_INPUT, "File too large for the virus scanner"
        ) from exc
    except (ClamdUnavailable, ValueError) as exc:
        log.error("virus scan failed: %s", exc)
        raise unavailable("The virus scanner") from exc
    if not verdict.clean:
        log.warning("upload by %s refused: clamd found %s", user_id, verdict.signature)
        raise bad_input(f"File rejected: malware detected ({verdict.signature})")


async def _store_blob(
    settings: Settings,
    user_id: uuid.UUID,
    name: str,
    content_type: str,
    chunks: AsyncIterator[bytes],
    hours: int,
) -> StoredFile:
    file_id = uuid.uuid4()
    blob_name = f"{user_id}/{file_id}/{name}"
    expires_at = utcnow() + timedelta(hours=hours)
    async with _storage(settings) as storage:
        # Signed first: it needs no blob, and a misconfigured key fails before any upload.
        uri = storage.read_url(blob_name, expires_at)
        row = await UploadedFile.create(
            id=file_id,
            user_id=user_id,
            blob_name=blob_name,
            file_name=name,
            content_type=content_type,
            size=0,
            expires_at=expires_at,
        )
        try:
            size = await storage.upload_stream(
                blob_name,
                chunks,
                content_type=content_type,
                content_disposition=f'attachment; filename="{name}"',
            )
        except BaseException:
            await asyncio.shield(_forget(row.id))
            raise
    await UploadedFile.filter(id=row.id).update(size=size)
    return StoredFile(uri, name, size, content_type, hours)


async def _forget(file_id: uuid.UUID) -> None:
    await UploadedFile.filter(id=file_id).delete()


@contextlib.asynccontextmanager
async def _storage(settings: Settings) -> AsyncIterator[BlobStorage]:
    """The configured container; storage failures become 503 (config errors too: the
    client can do nothing about either, and the log says which it was)."""
    storage = BlobStorage(
        settings.AZURE_STORAGE_CONNECTION_STRING or "", settings.AZURE_STORAGE_CONTAINER
    )
    try:
        yield storage
    except (StorageError, ValueError) as exc:
        log.error("file storage failed: %r", exc)
        raise unavailable("File storage") from exc
    finally:
        await storage.aclose()


# --- reading (for blocks) ---------------------------------------------------------


@dataclass(frozen=True)
class FileContent:
    name: str
    content_type: str
    data: bytes


async def read_user_file(
    settings: Settings, user_id: uuid.UUID, uri: str, max_bytes: int
) -> FileContent:
    """The bytes behind a file URI from POST /api/files, as `user_id` may read them.

    A data: URI carries its own bytes. A blob URL must point into the configured
    container, under the user's own directory, at a file of theirs that has not
    expired; the bytes are read with the account's key, never by fetching the URL,
    so a crafted URL cannot reach another host. Another user's file is "not found".
    """
    uri = uri.strip()
    if uri.startswith("data:"):
        return _parse_data_uri(uri, max_bytes)
    missing = not_found("File")
    if not settings.AZURE_STORAGE_CONNECTION_STRING:
        raise missing
    async with BlobStorage(
        settings.AZURE_STORAGE_CONNECTION_STRING, settings.AZURE_STORAGE_CONTAINER
    ) as storage:
        blob_name = storage.blob_name_of(uri)
        if blob_name is None or not blob_name.startswith(f"{user_id}/"):
            raise missing
        row = await UploadedFile.get_or_none(
            blob_name=blob_name, user_id=user_id, expires_at__gt=utcnow()
        )
        if row is None:
            raise missing
        if row.size > max_bytes:
            raise bad_input(f"File is {row.size} bytes; at most {max_bytes} can be read")
        try:
            data = await storage.read(blob_name, max_bytes)
        except ValueError as exc:
            raise bad_input(f"File is larger than {max_bytes} bytes") from exc
        except StorageError as exc:
            # The storage error's text names the account and request: log it, not the run.
            log.error("reading %s failed: %r", blob_name, exc)
            raise AppError(ErrorCode.INTERNAL, "File storage is unavailable") from exc
        if data is None:
            raise missing
    return FileContent(row.file_name, row.content_type, data)


def _parse_data_uri(uri: str, max_bytes: int) -> FileContent:
    """RFC 2397: data:[<media type>][;base64],<data>."""
    header, comma, payload = uri[len("data:") :].partition(",")
    if not comma:
        raise bad_input("Malformed data: URI (no comma)")
    params = [p.strip() for p in header.split(";")]
    is_base64 = params[-1].lower() == "base64"
    if is_base64:
        params.pop()
    content_type = safe_content_type(params[0]) if params and params[0] else "text/plain"
    # Refused before decoding when the payload cannot fit: base64 is 4 characters per
    # 3 bytes, percent-encoding at most 3 characters per byte.
    if (len(payload) * 3 // 4 > max_bytes + 3) if is_base64 else (len(payload) > max_bytes * 3):
        raise bad_input(f"File is larger than {max_bytes} bytes")
    try:
        data = base64.b64decode(payload, validate=True) if is_base64 else unquote_to_bytes(payload)
    except (binascii.Error, ValueError) as exc:
        raise bad_input("Malformed data: URI (bad base64)") from exc
    if len(data) > max_bytes:
        raise bad_input(f"File is larger than {max_bytes} bytes")
    return FileContent(DEFAULT_FILE_NAME, content_type, data)


# --- expiry ---------------------------------------------------------------------


async def delete_expired_files(settings: Settings, now: datetime | None = None) -> int:
    """Delete every expired file's blob, then its row; returns how many went.

    Safe to repeat and to run on several workers at once: a blob already gone
    counts as deleted, and a row is removed only after its blob. A storage error
    stops the run with the remaining rows kept for the next one.
    """
    if not settings.AZURE_STORAGE_CONNECTION_STRING:
        return 0
    cutoff = now or utcnow()
    deleted = 0
    async with BlobStorage(
        settings.AZURE_STORAGE_CONNECTION_STRING, settings.AZURE_STORAGE_CONTAINER
    ) as storage:
        while True:
            rows = (
                await UploadedFile.filter(expires_at__lte=cutoff)
                .order_by("expires_at")
                .limit(EXPIRY_BATCH)
            )
            for row in rows:
                await storage.delete(row.blob_name)
            if rows:
                deleted += await UploadedFile.filter(id__in=[row.id for row in rows]).delete()
            if len(rows) < EXPIRY_BATCH:
                return deleted
