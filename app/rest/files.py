"""POST /api/files: a multipart upload, read as a stream (SEMANTICS.md §10).

Starlette's `request.form()` would spool the whole body before we saw a byte;
here python-multipart's push parser is fed each chunk as it arrives and the
`file` part's bytes go straight on to the files service, which counts them
against the limit and stores them. Nothing past the file part is read.

Signed in like GraphQL (JWT or API key). An API key needs EXECUTE_GRAPH:
uploads exist to be inputs of runs.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from app.auth import authenticate, credentials_from, unauthenticated
from app.errors import AppError, ErrorCode, bad_input
from app.models import ApiKeyPermission
from app.rest.errors import app_error_response
from app.services import files
from app.services.upload_quota import UploadQuota
from app.services.users import ensure_user

log = logging.getLogger(__name__)

FILE_FIELD = "file"
# Room for the multipart framing around the file (boundaries, part headers, small
# fields) when a declared Content-Length is compared with the file size limit.
MULTIPART_OVERHEAD_BYTES = 64 * 1024
# Fields other than `file` are ignored, but only this much of them is read.
MAX_OTHER_FIELD_BYTES = 64 * 1024
UPLOAD_PERMISSION = ApiKeyPermission.EXECUTE_GRAPH


def upload_error_response(exc: AppError) -> JSONResponse:
    response = app_error_response(exc)
    if isinstance(exc, files.UploadError):
        # 413 and 503 have no code of their own; the status says which it was.
        response.status_code = exc.status
    return response


async def upload_file(request: Request) -> Response:
    settings = request.app.state.services.settings
    try:
        principal = await authenticate(settings, credentials_from(request.headers))
        if principal is None:
            raise unauthenticated()
        if not principal.allows(UPLOAD_PERMISSION):
            raise AppError(
                ErrorCode.FORBIDDEN, f"This API key lacks the {UPLOAD_PERMISSION.value} permission"
            )
        hours = files.expiration_hours(request.query_params.get("expiration_hours"))
        boundary = multipart_boundary(request.headers.get("content-type"))
        limit = files.upload_limit_bytes(settings)
        declared = request.headers.get("content-length", "")
        declared = declared if declared.isascii() and declared.isdigit() else ""
        if declared and int(declared) > limit + MULTIPART_OVERHEAD_BYTES:
            # Refused before reading a byte of it.
            raise files.upload_too_large(limit)
        user_id = await ensure_user(settings, principal)
        quota = UploadQuota(settings, request.app.state.services.redis, user_id)
        file_bytes = int(declared) - MULTIPART_OVERHEAD_BYTES if declared else None
        await quota.admit(file_bytes)
        async with aclosing(request.stream()) as body:
            incoming = await MultipartFileReader(body, boundary, FILE_FIELD).open()
            incoming.chunks = quota.metered(incoming.chunks)
            stored = await files.store_upload(settings, user_id, incoming, hours)
    except AppError as exc:
        return upload_error_response(exc)
    except ClientDisconnect:
        # Nobody is left to answer; whatever was staged has been discarded.
        return Response(status_code=400)
    except Exception:
        error_id = uuid.uuid4().hex
        log.exception("unexpected error %s in POST /api/files", error_id)
        return JSONResponse(
            {
                "error": ErrorCode.INTERNAL.value,
                "message": "Internal server error",
                "errorId": error_id,
            },
            status_code=500,
        )
    return JSONResponse(stored.as_json())


def multipart_boundary(content_type: str | None) -> bytes:
    kind, options = parse_options_header(content_type or "")
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise bad_input(
            f"Send the file as multipart/form-data in a field named {FILE_FIELD!r}",
            field="content-type",
        )
    return boundary


class MultipartFileReader:
    """Pulls one named file part out of a multipart body while the body streams in.

    python-multipart calls back synchronously from `write`; the callbacks only
    queue the file's bytes, and `chunks` hands them on between writes, so at
    most one received chunk waits here at a time.
    """

    def __init__(self, body: AsyncIterator[bytes], boundary: bytes, field: str) -> None:
        self._body = body
        self._field = field
        self._parser = MultipartParser(
            boundary,
            callbacks={
                "on_part_begin": self._on_part_begin,
                "on_header_field": self._on_header_field,
                "on_header_value": self._on_header_value,
                "on_header_end": self._on_header_end,
                "on_headers_finished": self._on_headers_finished,
                "on_part_data": self._on_part_data,
                "on_part_end": self._on_part_end,
            },
        )
        self._headers: dict[str, str] = {}
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._in_file = False
        self._file_found = False
        self._file_done = False
        self._other_bytes = 0
        self._pending: list[bytes] = []
        self.file_name: str | None = None
        self.content_type: str | None = None

    async def open(self) -> files.IncomingFile:
        """Read up to the file part's headers; its bytes follow through `chunks`."""
        while not self._file_found:
            if not await self._feed():
                raise bad_input(f"No multipart field named {FILE_FIELD!r}", field=FILE_FIELD)
        return files.IncomingFile(self.file_name, self.content_type, self._chunks())

    async def _chunks(self) -> AsyncIterator[bytes]:
        while True:
            while self._pending:
                yield self._pending.pop(0)
            if self._file_done:
                return
            if not await self._feed():
                raise bad_input("The request body ended inside the file", field=FILE_FIELD)

    async def _feed(self) -> bool:
        """Parse the next chunk of the body; False when the body has ended."""
        chunk = b""
        while not chunk:
            try:
                chunk = await anext(self._body)
            except StopAsyncIteration:
                return False
        try:
            self._parser.write(chunk)
        except MultipartParseError as exc:
            raise bad_input(f"Malformed multipart body: {exc}") from exc
        return True

    # python-multipart callbacks --------------------------------------------------

    def _on_part_begin(self) -> None:
        self._headers = {}

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _on_header_end(self) -> None:
        name = self._header_field.decode("latin-1").strip().lower()
        # latin-1 keeps every byte as one character; the file name is decoded below.
        self._headers[name] = self._header_value.decode("latin-1").strip()
        self._header_field.clear()
        self._header_value.clear()

    def _on_headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get("content-disposition", ""))
        name = options.get(b"name", b"").decode("latin-1")
        self._in_file = name == self._field and not self._file_found
        if self._in_file:
            self._file_found = True
            filename = options.get(b"filename")
            # Browsers send file names as raw UTF-8 in the part headers.
            self.file_name = filename.decode("utf-8", "replace") if filename is not None else None
            self.content_type = self._headers.get("content-type")

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file:
            self._pending.append(bytes(data[start:end]))
            return
        self._other_bytes += end - start
        if self._other_bytes > MAX_OTHER_FIELD_BYTES:
            raise bad_input(f"Only the {FILE_FIELD!r} field may be large")

    def _on_part_end(self) -> None:
        if self._in_file:
            self._file_done = True
            self._in_file = False
