"""A real SMTP server (aiosmtpd) in the test process, standing in for the mail
relay of the world. It speaks SMTP to the product's aiosmtplib client, keeps
every accepted message (parsed), and can answer a recipient with temporary
(451) or permanent (550) refusals, to test retries."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default

from aiosmtpd.controller import Controller


@dataclass
class SmtpStandIn:
    port: int
    messages: list[EmailMessage] = field(default_factory=list)
    # recipient -> how many more deliveries get a 451
    temporary_failures: Counter = field(default_factory=Counter)
    # recipients refused for good (550)
    refused: set[str] = field(default_factory=set)
    # recipient -> DATA attempts, accepted or not
    attempts: Counter = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        self._controller = Controller(_Handler(self), hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()

    def to(self, address: str) -> list[EmailMessage]:
        with self._lock:
            return [m for m in self.messages if str(m["To"]) == address]

    async def wait_for(self, address: str, count: int, timeout: float = 30.0) -> list[EmailMessage]:
        """The mails to `address` once there are at least `count` of them."""
        deadline = asyncio.get_running_loop().time() + timeout
        while len(found := self.to(address)) < count:
            assert asyncio.get_running_loop().time() < deadline, (
                f"{len(found)} of {count} mails to {address}"
            )
            await asyncio.sleep(0.05)
        return found


class _Handler:
    def __init__(self, stand_in: SmtpStandIn) -> None:
        self.stand_in = stand_in

    async def handle_DATA(self, server, session, envelope) -> str:
        stand_in = self.stand_in
        with stand_in._lock:
            for rcpt in envelope.rcpt_tos:
                stand_in.attempts[rcpt] += 1
                if rcpt in stand_in.refused:
                    return "550 5.1.1 No such mailbox"
                if stand_in.temporary_failures[rcpt] > 0:
                    stand_in.temporary_failures[rcpt] -= 1
                    return "451 4.3.0 Try again later"
            stand_in.messages.append(message_from_bytes(envelope.content, policy=default))
        return "250 Message accepted for delivery"


def bodies(message: EmailMessage) -> tuple[str, str]:
    """(plain text, HTML) of a multipart/alternative mail."""
    text = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    return (text.get_content() if text else "", html.get_content() if html else "")


class SilentSmtp:
    """A mail relay that accepts connections and never says a word (no greeting), as
    one does that is overloaded or wedged: it holds each session until released,
    counting how many it holds at once."""

    def __init__(self) -> None:
        self.held = 0
        self.max_held = 0
        self._release = asyncio.Event()
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._hold, "127.0.0.1", 0)

    async def _hold(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.held += 1
        self.max_held = max(self.max_held, self.held)
        try:
            # Until released, or until the client gives up and hangs up.
            reading = asyncio.ensure_future(reader.read())
            releasing = asyncio.ensure_future(self._release.wait())
            await asyncio.wait({reading, releasing}, return_when=asyncio.FIRST_COMPLETED)
            reading.cancel()
            releasing.cancel()
        finally:
            self.held -= 1
            writer.close()

    async def stop(self) -> None:
        self._release.set()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
