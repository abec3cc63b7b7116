"""A local stand-in for clamd (ClamAV's daemon is not installed here).

It speaks the INSTREAM protocol as clamd does: `zINSTREAM\\0`, chunks each
prefixed by a 4-byte big-endian length, a zero length to end; then one
NUL-terminated reply, `stream: OK` or `stream: <signature> FOUND`. Content
holding INFECTED_MARKER (part of the EICAR test string) is "infected". Tests
switch `mode` to make it misbehave, and read what it was sent.
"""

from __future__ import annotations

import socket
import socketserver
import struct
import threading
from dataclasses import dataclass, field

INFECTED_MARKER = b"EICAR-STANDARD-ANTIVIRUS-TEST-FILE"
SIGNATURE = "Eicar-Test-Signature"


@dataclass
class ClamdStandIn:
    # "scan": answer like clamd; "hangup": read the command, close without a reply;
    # "silent": read everything, never answer.
    mode: str = "scan"
    # Like clamd's StreamMaxLength: longer streams get "size limit exceeded".
    max_stream_bytes: int = 1 << 40
    # Sizes of the streams scanned, in order.
    scanned: list[int] = field(default_factory=list)
    _server: _Server | None = None
    _thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        host, port = self._server.server_address
        return f"{host}:{port}"

    def start(self) -> None:
        stand_in = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                stand_in._handle(self.request)

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()

    def _handle(self, conn: socket.socket) -> None:
        reader = conn.makefile("rb")
        command = _read_until_nul(reader)
        if self.mode == "hangup" or command != b"zINSTREAM":
            return
        size = 0
        found = False
        tail = b""  # the marker may straddle two chunks
        while True:
            header = reader.read(4)
            if len(header) < 4:
                return
            (length,) = struct.unpack(">I", header)
            if length == 0:
                break
            chunk = reader.read(length)
            size += len(chunk)
            if size > self.max_stream_bytes:
                conn.sendall(b"INSTREAM size limit exceeded. ERROR\0")
                return
            found = found or INFECTED_MARKER in tail + chunk
            tail = chunk[-len(INFECTED_MARKER) :]
        self.scanned.append(size)
        if self.mode == "silent":
            # Hold the connection open without a word until the client gives up.
            reader.read()
            return
        reply = f"stream: {SIGNATURE} FOUND" if found else "stream: OK"
        conn.sendall(reply.encode() + b"\0")


class _Server(socketserver.ThreadingTCPServer):
    # A silent connection's thread may still be blocked when the tests end.
    daemon_threads = True
    allow_reuse_address = True


def _read_until_nul(reader) -> bytes:
    data = bytearray()
    while (byte := reader.read(1)) not in (b"", b"\0"):
        data += byte
        if len(data) > 64:
            break
    return bytes(data)
