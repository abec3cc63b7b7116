"""A ClamAV daemon client speaking INSTREAM over TCP (clamd's `CLAMD_ADDRESS`).

The protocol: send `zINSTREAM\\0`, then the content as chunks each prefixed by
its length (4 bytes, big-endian), then a zero length; clamd answers one
NUL-terminated line, `stream: OK` or `stream: <signature> FOUND` (or
`... ERROR` when it could not scan, e.g. past its StreamMaxLength).
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterable
from dataclasses import dataclass

# clamd reads INSTREAM chunks into memory; keep each one modest.
MAX_CHUNK_BYTES = 1024 * 1024
_TERMINATOR = struct.pack(">I", 0)
# A reply is one short line; anything longer is not clamd.
_MAX_REPLY_BYTES = 4096


class ClamdUnavailable(Exception):
    """clamd did not answer (refused, closed, timed out) or answered nonsense."""


class ClamdStreamTooLarge(Exception):
    """clamd refused the stream as longer than its StreamMaxLength."""


@dataclass(frozen=True)
class ScanVerdict:
    clean: bool
    # The signature clamd found, when not clean.
    signature: str | None = None


def parse_address(address: str) -> tuple[str, int]:
    """`host:port` (IPv6 as `[::1]:3310`) -> (host, port); ValueError when malformed."""
    host, sep, port = address.strip().rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"CLAMD_ADDRESS must be host:port, not {address!r}")
    return host.strip("[]"), int(port)


class ClamdClient:
    def __init__(
        self,
        address: str,
        *,
        connect_timeout: float = 5.0,
        write_timeout: float = 30.0,
        # Scanning a large file takes a while after the last byte arrives.
        reply_timeout: float = 120.0,
    ) -> None:
        self.host, self.port = parse_address(address)
        self.connect_timeout = connect_timeout
        self.write_timeout = write_timeout
        self.reply_timeout = reply_timeout

    async def scan(self, chunks: AsyncIterable[bytes]) -> ScanVerdict:
        """Stream the content to clamd and return its verdict.

        Raises ClamdUnavailable when clamd cannot give one, ClamdStreamTooLarge
        when it refuses the size. Errors of `chunks` itself propagate unchanged.
        """
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), self.connect_timeout
            )
        except (OSError, TimeoutError) as exc:
            raise ClamdUnavailable(f"cannot connect to clamd: {exc!r}") from exc
        try:
            try:
                await self._send(writer, b"zINSTREAM\0")
                async for chunk in chunks:
                    for start in range(0, len(chunk), MAX_CHUNK_BYTES):
                        piece = chunk[start : start + MAX_CHUNK_BYTES]
                        await self._send(writer, struct.pack(">I", len(piece)) + piece)
                await self._send(writer, _TERMINATOR)
            except (OSError, TimeoutError):
                # clamd closes the stream early when it passes StreamMaxLength;
                # its reply, if any, says why. Fall through and read it.
                pass
            reply = await self._read_reply(reader)
        finally:
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 1.0)
        return _verdict(reply)

    async def _send(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(data)
        await asyncio.wait_for(writer.drain(), self.write_timeout)

    async def _read_reply(self, reader: asyncio.StreamReader) -> str:
        try:
            raw = await asyncio.wait_for(reader.readuntil(b"\0"), self.reply_timeout)
        except asyncio.IncompleteReadError as exc:
            # Closed without the NUL: take what came, if anything.
            raw = exc.partial
        except (OSError, TimeoutError, asyncio.LimitOverrunError) as exc:
            raise ClamdUnavailable(f"clamd did not answer: {exc!r}") from exc
        if not raw or len(raw) > _MAX_REPLY_BYTES:
            raise ClamdUnavailable("clamd closed the connection without a verdict")
        return raw.rstrip(b"\0").decode("utf-8", "replace").strip()


def _verdict(reply: str) -> ScanVerdict:
    # "stream: OK", "stream: Eicar-Test-Signature FOUND", "INSTREAM size limit exceeded. ERROR"
    _, _, result = reply.partition(": ")
    result = result or reply
    if result == "OK":
        return ScanVerdict(clean=True)
    if result.endswith(" FOUND"):
        return ScanVerdict(clean=False, signature=result.removesuffix(" FOUND").strip())
    if "size limit exceeded" in reply.lower():
        raise ClamdStreamTooLarge(reply)
    raise ClamdUnavailable(f"clamd could not scan: {reply!r}")
