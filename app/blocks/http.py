"""Real HTTP requests, guarded so a graph cannot reach the server's own network (SSRF).

Unless `ALLOW_PRIVATE_HTTP` is set, every host is resolved here first, every address it
resolves to must be public, and the connection then goes to one of those checked
addresses (the URL's name is kept for the Host header and TLS). Connecting to the
checked address, rather than letting httpx resolve the name again, is what stops a DNS
answer that changes between the check and the connection (DNS rebinding). Redirects are
followed here, not by httpx, so each new location goes through the same check.
"""

from __future__ import annotations

import asyncio
import codecs
import ipaddress
import json
import re
import socket
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import httpx
from pydantic import Field, field_validator

from app.blocks.base import (
    Block,
    BlockCategory,
    BlockCost,
    BlockError,
    BlockInput,
    BlockOutput,
    BlockRunContext,
    without_secrets,
)
from app.blocks.credentials import CredentialsField

if TYPE_CHECKING:
    from app.settings import Settings

MAX_REDIRECTS = 5
MAX_RESPONSE_BYTES = 10 * 1024 * 1024
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
DEFAULT_PORTS = {"http": 80, "https": 443}

HttpMethod = Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]

# Headers that must not follow a redirect to another origin: they carry credentials.
_CREDENTIAL_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})
# Headers describing a body, dropped when a redirect turns the request into a GET.
_BODY_HEADERS = frozenset({"content-type", "content-length", "content-encoding"})
# RFC 9110: a field name is a token; a value visible ASCII, spaces and tabs.
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_HEADER_VALUE = re.compile(r"[\t\x20-\x7e]*")


def _is_public_ip(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    # is_global alone is not enough: Python 3.11 calls multicast and the deprecated
    # IPv6 site-local range global, so every category is checked by name as well.
    return not (
        ip.is_loopback
        or ip.is_private
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or getattr(ip, "is_site_local", False)
        or not ip.is_global
    )


def is_public_address(address: str) -> bool:
    """True when `address` (an IP address as getaddrinfo gives it) is globally routable,
    including every IPv4 address embedded in an IPv6 one."""
    try:
        # getaddrinfo appends the zone to IPv6 link-local addresses (fe80::1%eth0).
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if not _is_public_ip(ip):
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        # IPv6 forms that carry an IPv4 address the packet may end up at: a private IPv4
        # address inside one is as private as the bare address. (NAT64's 64:ff9b::/96 is
        # refused whole above: Python counts it as reserved.)
        embedded = [ip.ipv4_mapped, ip.sixtofour, *(ip.teredo or ())]
        return all(_is_public_ip(inner) for inner in embedded if inner is not None)
    return True


def parse_url(url: str | httpx.URL) -> httpx.URL:
    """The URL, or BlockError when it is not an absolute http(s) URL with a host."""
    try:
        parsed = url if isinstance(url, httpx.URL) else httpx.URL(url.strip())
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise BlockError(f"HttpRequest: invalid URL {str(url)!r}: {exc}") from exc
    if parsed.scheme not in DEFAULT_PORTS:
        raise BlockError(
            f"HttpRequest only fetches http and https URLs, not {parsed.scheme or 'no'} scheme"
        )
    if not parsed.raw_host:
        raise BlockError(f"HttpRequest: URL {str(url)!r} has no host")
    # httpx accepts any digits as a port; the resolver would raise OverflowError.
    if parsed.port is not None and not 1 <= parsed.port <= 65535:
        raise BlockError(f"HttpRequest: URL {str(url)!r} has port {parsed.port}, not 1 to 65535")
    return parsed


async def check_public_url(url: str | httpx.URL, settings: Settings) -> list[str]:
    """The addresses `url` may be fetched from; BlockError when it may not be fetched.

    Only http(s) URLs pass. Unless `settings.ALLOW_PRIVATE_HTTP`, the host is resolved
    and EVERY address it resolves to must be public: which one a connection would use is
    the resolver's choice, so one private answer refuses the URL. The resolver also turns
    numeric forms (2130706433, 0x7f000001, 127.1) into the addresses they mean, so those
    are checked as what they really are. Returns [] when private addresses are allowed,
    meaning "connect by name".
    """
    parsed = parse_url(url)
    if settings.ALLOW_PRIVATE_HTTP:
        return []
    # raw_host is the ASCII (IDNA) form, without the brackets of an IPv6 literal.
    host = parsed.raw_host.decode("ascii")
    port = parsed.port or DEFAULT_PORTS[parsed.scheme]
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise BlockError(f"HttpRequest cannot resolve host {host!r}: {exc}") from exc
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise BlockError(f"HttpRequest cannot resolve host {host!r}")
    for address in addresses:
        if not is_public_address(address):
            raise BlockError(
                f"HttpRequest refuses private address {address} (host {host!r}): only public "
                "internet addresses may be fetched"
            )
    return addresses


@dataclass
class _Reply:
    status_code: int
    headers: httpx.Headers
    body: bytes
    encoding: str


def _origin(url: httpx.URL) -> tuple[str, bytes, int]:
    return url.scheme, url.raw_host, url.port or DEFAULT_PORTS[url.scheme]


def _encode_body(body: Any, headers: dict[str, str]) -> bytes | None:
    """The request body as bytes (so it can be re-sent on a retry or a 307/308), setting
    a Content-Type unless the user gave one."""
    if body is None:
        return None
    has_type = any(name.lower() == "content-type" for name in headers)
    if isinstance(body, str):
        if not has_type:
            headers["Content-Type"] = "text/plain; charset=utf-8"
        return body.encode()
    if not has_type:
        headers["Content-Type"] = "application/json"
    try:
        return json.dumps(body, ensure_ascii=False).encode()
    except (TypeError, ValueError) as exc:
        raise BlockError(f"HttpRequest: body is not JSON-serialisable: {exc}") from exc


def _charset(response: httpx.Response) -> str:
    charset = response.charset_encoding or "utf-8"
    try:
        codecs.lookup(charset)
    except LookupError:
        return "utf-8"
    return charset


def _decode_body(reply: _Reply) -> Any:
    """Parsed JSON when the response says it is JSON (and is), else text."""
    media_type = reply.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type == "application/json" or media_type.endswith("+json"):
        try:
            return json.loads(reply.body)
        except ValueError:
            pass  # a server mislabelling its body is common; its text is still useful
    return reply.body.decode(reply.encoding, errors="replace")


class HttpRequest(Block):
    id = uuid.UUID("82a0bcd1-b880-4aaf-b29d-bcd942938286")
    name = "HttpRequest"
    description = (
        "Sends an HTTP request and yields the response: parsed JSON when the server sends "
        "JSON, else text. 4xx responses come out on client_error, 5xx on server_error. "
        "Follows up to 5 redirects. Private, loopback and link-local addresses are refused "
        "unless the server allows them."
    )
    categories = (BlockCategory.HTTP,)
    sensitive = True
    costs = (BlockCost(amount=1),)

    class Input(BlockInput):
        url: str = Field(description="The http:// or https:// URL to request.")
        method: HttpMethod = Field(default="GET", description="The HTTP method.")
        headers: dict[str, str] = Field(
            default_factory=dict, description="Request headers, name -> value."
        )

        @field_validator("headers")
        @classmethod
        def _sendable(cls, headers: dict[str, str]) -> dict[str, str]:
            """HTTP allows token names and visible ASCII values; anything else
            (a non-ASCII value, a line break, a space in a name) would fail
            deep in the HTTP client with an unclear error."""
            for name, value in headers.items():
                if not _HEADER_NAME.fullmatch(name):
                    raise ValueError(f"header name {name[:100]!r} is not an HTTP token")
                if not _HEADER_VALUE.fullmatch(value):
                    raise ValueError(
                        f"header {name!r}: its value must be printable ASCII (no line breaks)"
                    )
            return headers

        body: Any = Field(
            default=None,
            description="The request body: objects and lists are sent as JSON, strings as text.",
        )
        timeout_seconds: float = Field(
            default=30, ge=1, le=120, description="Give up after this many seconds (1 to 120)."
        )

    class Output(BlockOutput):
        response: Any = Field(description="The body of a 2xx/3xx response: JSON or text.")
        status_code: int = Field(description="The response's HTTP status code.")
        response_headers: dict[str, str] = Field(description="The response headers.")
        client_error: Any = Field(description="The body of a 4xx response.")
        server_error: Any = Field(description="The body of a 5xx response.")

    credentials_fields = {
        "http_credentials": CredentialsField(
            provider=None,
            types=("BEARER", "BASIC"),
            description=(
                "Optional: sent as the Authorization header to the URL's host only "
                "(dropped when a redirect leads to another host)."
            ),
            required=False,
        )
    }

    async def run(self, input: Input, context: BlockRunContext):
        async for pin, value in without_secrets(self._request(input, context), context.secrets()):
            yield pin, value

    async def _request(self, input: Input, context: BlockRunContext):
        credentials = context.credentials.get("http_credentials")
        authorization = credentials.authorization_header() if credentials else None
        try:
            async with asyncio.timeout(input.timeout_seconds):
                reply = await self._fetch(input, context.settings, authorization)
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise BlockError(
                f"HttpRequest timed out after {input.timeout_seconds:g} seconds"
            ) from exc
        except httpx.HTTPError as exc:
            raise BlockError(f"HttpRequest failed: {str(exc) or type(exc).__name__}") from exc
        body = _decode_body(reply)
        if reply.status_code >= 500:
            yield "server_error", body
            yield "status_code", reply.status_code
        elif reply.status_code >= 400:
            yield "client_error", body
            yield "status_code", reply.status_code
        else:
            yield "response", body
            yield "status_code", reply.status_code
            yield "response_headers", dict(reply.headers.items())

    async def _fetch(
        self, input: Input, settings: Settings, authorization: str | None = None
    ) -> _Reply:
        url = parse_url(input.url)
        method: str = input.method
        # Host always follows the URL: the connection may go to a pinned address.
        headers = {k: v for k, v in input.headers.items() if k.lower() != "host"}
        if authorization is not None:  # stored credentials win over a typed-in header
            headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
            headers["Authorization"] = authorization
        content = _encode_body(input.body, headers)
        timeout = httpx.Timeout(input.timeout_seconds)
        # trust_env=False: no proxy from the environment (it would do its own, unchecked,
        # resolving) and no ~/.netrc credentials sent to whatever host a graph names.
        async with httpx.AsyncClient(trust_env=False, follow_redirects=False) as client:
            for redirects in range(MAX_REDIRECTS + 1):
                addresses = await check_public_url(url, settings)
                response = await _send(client, method, url, headers, content, addresses, timeout)
                try:
                    location = response.headers.get("location")
                    if response.status_code not in REDIRECT_STATUSES or not location:
                        return await _read(response)
                finally:
                    await response.aclose()
                if redirects == MAX_REDIRECTS:
                    raise BlockError(f"HttpRequest stopped after {MAX_REDIRECTS} redirects")
                try:
                    next_url = url.join(location)
                except (httpx.InvalidURL, ValueError) as exc:
                    raise BlockError(f"HttpRequest: invalid redirect to {location!r}") from exc
                # What browsers do: 303 always becomes a GET, and so does a POST that
                # meets 301/302; 307/308 repeat the request as it was.
                status = response.status_code
                if (status == 303 and method != "HEAD") or (
                    status in (301, 302) and method == "POST"
                ):
                    method, content = "GET", None
                    headers = {k: v for k, v in headers.items() if k.lower() not in _BODY_HEADERS}
                if _origin(parse_url(next_url)) != _origin(url):
                    headers = {
                        k: v for k, v in headers.items() if k.lower() not in _CREDENTIAL_HEADERS
                    }
                url = next_url
        raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover


async def _send(
    client: httpx.AsyncClient,
    method: str,
    url: httpx.URL,
    headers: dict[str, str],
    content: bytes | None,
    addresses: list[str],
    timeout: httpx.Timeout,
) -> httpx.Response:
    """Send once, to the first checked address that accepts a connection (or by name
    when `addresses` is empty), and return the response with its body unread."""
    host_header = url.netloc.decode("ascii")
    targets: list[str | None] = list(addresses) or [None]
    for index, address in enumerate(targets):
        extensions: dict[str, Any] = {"timeout": timeout.as_dict()}
        target = url
        if address is not None:
            target = url.copy_with(host=address)
            # TLS must still check the certificate against the name, not the address.
            extensions["sni_hostname"] = url.raw_host.decode("ascii")
        request = httpx.Request(
            method,
            target,
            headers={**headers, "Host": host_header},
            content=content,
            extensions=extensions,
        )
        try:
            return await client.send(request, stream=True)
        except httpx.ConnectError:
            if index == len(targets) - 1:
                raise
    raise AssertionError("unreachable: targets is never empty")  # pragma: no cover


async def _read(response: httpx.Response) -> _Reply:
    """Read the body, refusing more than MAX_RESPONSE_BYTES (counted after decompression,
    so a small compressed bomb is refused too)."""
    limit_mb = MAX_RESPONSE_BYTES // (1024 * 1024)
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_RESPONSE_BYTES:
        raise BlockError(f"HttpRequest: the response is larger than {limit_mb} MB")
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > MAX_RESPONSE_BYTES:
            raise BlockError(f"HttpRequest: the response is larger than {limit_mb} MB")
        chunks.append(chunk)
    return _Reply(response.status_code, response.headers, b"".join(chunks), _charset(response))
