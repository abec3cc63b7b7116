"""Email through SMTP (aiosmtplib). SMTP_URL says where:
`smtp://user:password@host:port` (STARTTLS when the server offers it) or
`smtps://…` (TLS from the first byte)."""

from __future__ import annotations

from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate
from urllib.parse import unquote, urlsplit

import aiosmtplib

SMTP_TIMEOUT_SECONDS = 30


class PermanentMailError(Exception):
    """The server refused the mail for good (a 5xx answer): retrying cannot help."""


@dataclass(frozen=True)
class SmtpTarget:
    hostname: str
    port: int
    username: str | None
    password: str | None
    use_tls: bool


def smtp_target(url: str) -> SmtpTarget:
    parts = urlsplit(url)
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        raise ValueError("SMTP_URL must look like smtp://user:password@host:port or smtps://…")
    use_tls = parts.scheme == "smtps"
    return SmtpTarget(
        hostname=parts.hostname,
        port=parts.port or (465 if use_tls else 25),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        use_tls=use_tls,
    )


@dataclass(frozen=True)
class Mail:
    to: str
    subject: str
    text: str
    html: str
    # Stable per notification, so a mail sent twice (a retry after a lost
    # answer) is recognisably the same one.
    message_id: str


class Mailer:
    def __init__(self, smtp_url: str, sender: str) -> None:
        self.target = smtp_target(smtp_url)
        self.sender = sender

    async def send(self, mail: Mail) -> None:
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = mail.to
        message["Subject"] = mail.subject
        message["Date"] = formatdate(localtime=False)
        message["Message-ID"] = mail.message_id
        message.set_content(mail.text)
        message.add_alternative(mail.html, subtype="html")
        target = self.target
        try:
            await aiosmtplib.send(
                message,
                hostname=target.hostname,
                port=target.port,
                username=target.username,
                password=target.password,
                use_tls=target.use_tls,
                start_tls=False if target.use_tls else None,
                timeout=SMTP_TIMEOUT_SECONDS,
            )
        except aiosmtplib.SMTPRecipientsRefused as error:
            raise PermanentMailError(str(error)) from error
        except aiosmtplib.SMTPResponseException as error:
            if 500 <= error.code < 600:
                raise PermanentMailError(f"{error.code} {error.message}") from error
            raise
