"""HttpRequest against a real local HTTP server, and its private-address guard."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from app.blocks import http as http_block
from app.blocks.base import BlockError, BlockRunContext, InvalidBlockInput
from app.blocks.credentials import CredentialsSecret
from app.blocks.http import HttpRequest, check_public_url, is_public_address
from app.settings import Settings
from tests.blocks.conftest import run_block

ALLOW_PRIVATE = Settings(ALLOW_PRIVATE_HTTP=True)
DEFAULT = Settings(ALLOW_PRIVATE_HTTP=False)
BIG_BYTES = 10 * 1024 * 1024 + 1


@dataclass
class LocalServer:
    port: int
    # (method, path, Host header) of every request any of its sockets got.
    requests: list[tuple[str, str, str]] = field(default_factory=list)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"


def _app(server: LocalServer) -> web.Application:
    @web.middleware
    async def record(request: web.Request, handler: Any) -> web.StreamResponse:
        server.requests.append((request.method, request.path, request.headers.get("Host", "")))
        return await handler(request)

    async def json_page(request: web.Request) -> web.Response:
        return web.json_response({"hello": "world", "n": 1}, headers={"X-Test": "yes"})

    async def text_page(request: web.Request) -> web.Response:
        return web.Response(text="just some text")

    async def missing(request: web.Request) -> web.Response:
        return web.json_response({"error": "no such thing"}, status=404)

    async def boom(request: web.Request) -> web.Response:
        return web.Response(text="internal failure", status=500)

    async def echo(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "method": request.method,
                "headers": {k.lower(): v for k, v in request.headers.items()},
                "body": await request.text(),
            }
        )

    async def redirect_to(request: web.Request) -> web.Response:
        status = int(request.query.get("status", "302"))
        return web.Response(status=status, headers={"Location": request.query["target"]})

    async def loop(request: web.Request) -> web.Response:
        return web.Response(status=302, headers={"Location": "/loop"})

    async def big(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()  # chunked: no Content-Length to give it away
        await response.prepare(request)
        chunk = b"x" * (1024 * 1024)
        for _ in range(BIG_BYTES // len(chunk)):
            await response.write(chunk)
        await response.write(b"x" * (BIG_BYTES % len(chunk)))
        await response.write_eof()
        return response

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.Response(text="late")

    app = web.Application(middlewares=[record])
    app.router.add_get("/json", json_page)
    app.router.add_get("/text", text_page)
    app.router.add_get("/missing", missing)
    app.router.add_get("/boom", boom)
    app.router.add_route("*", "/echo", echo)
    app.router.add_route("*", "/redirect-to", redirect_to)
    app.router.add_get("/loop", loop)
    app.router.add_get("/big", big)
    app.router.add_get("/slow", slow)
    app.router.add_get("/", text_page)
    return app


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
async def server() -> AsyncIterator[LocalServer]:
    local = LocalServer(port=_free_port())
    runner = web.AppRunner(_app(local), access_log=None)
    await runner.setup()
    # Listen on every loopback address the tests name, so a request the guard
    # wrongly let through would be seen (and the "no request" checks would fail).
    await web.TCPSite(runner, "127.0.0.1", local.port).start()
    for extra in ("127.0.0.2", "::1"):
        try:
            await web.TCPSite(runner, extra, local.port).start()
        except OSError:
            pass  # no such loopback address here; the guard refuses it regardless
    yield local
    await runner.cleanup()


async def _request(settings: Settings, **input_data: Any) -> dict[str, Any]:
    outputs = await run_block(HttpRequest(), input_data, settings=settings)
    assert len({pin for pin, _ in outputs}) == len(outputs), outputs
    return dict(outputs)


# --- behaviour, with private addresses allowed ------------------------------------


async def test_json_response_is_parsed(server: LocalServer) -> None:
    out = await _request(ALLOW_PRIVATE, url=server.url("/json"))
    assert out["response"] == {"hello": "world", "n": 1}
    assert out["status_code"] == 200
    assert out["response_headers"]["x-test"] == "yes"
    assert out["response_headers"]["content-type"].startswith("application/json")
    assert set(out) == {"response", "status_code", "response_headers"}


async def test_text_response_is_returned_as_text(server: LocalServer) -> None:
    out = await _request(ALLOW_PRIVATE, url=server.url("/text"))
    assert out["response"] == "just some text"
    assert out["status_code"] == 200


async def test_4xx_comes_out_on_client_error(server: LocalServer) -> None:
    out = await _request(ALLOW_PRIVATE, url=server.url("/missing"))
    assert out == {"client_error": {"error": "no such thing"}, "status_code": 404}


async def test_5xx_comes_out_on_server_error(server: LocalServer) -> None:
    out = await _request(ALLOW_PRIVATE, url=server.url("/boom"))
    assert out == {"server_error": "internal failure", "status_code": 500}


async def test_post_json_body_and_headers_are_sent(server: LocalServer) -> None:
    out = await _request(
        ALLOW_PRIVATE,
        url=server.url("/echo"),
        method="POST",
        headers={"X-Custom": "abc"},
        body={"name": "Ada", "tags": ["x", "ü"]},
    )
    echoed = out["response"]
    assert echoed["method"] == "POST"
    assert json.loads(echoed["body"]) == {"name": "Ada", "tags": ["x", "ü"]}
    assert echoed["headers"]["content-type"] == "application/json"
    assert echoed["headers"]["x-custom"] == "abc"


async def test_string_body_is_sent_as_text(server: LocalServer) -> None:
    out = await _request(ALLOW_PRIVATE, url=server.url("/echo"), method="PUT", body="hi there")
    echoed = out["response"]
    assert (echoed["method"], echoed["body"]) == ("PUT", "hi there")
    assert echoed["headers"]["content-type"].startswith("text/plain")


async def test_other_methods(server: LocalServer) -> None:
    for method in ("PATCH", "DELETE", "OPTIONS"):
        out = await _request(ALLOW_PRIVATE, url=server.url("/echo"), method=method)
        assert out["response"]["method"] == method
    head = await _request(ALLOW_PRIVATE, url=server.url("/json"), method="HEAD")
    assert (head["response"], head["status_code"]) == ("", 200)


async def test_redirect_is_followed(server: LocalServer) -> None:
    out = await _request(ALLOW_PRIVATE, url=server.url("/redirect-to?target=/json"))
    assert out["response"] == {"hello": "world", "n": 1}
    assert out["status_code"] == 200


async def test_redirect_method_rules(server: LocalServer) -> None:
    # 302 turns a POST into a GET without the body; 307 repeats it as it was.
    after_302 = await _request(
        ALLOW_PRIVATE, url=server.url("/redirect-to?target=/echo"), method="POST", body={"a": 1}
    )
    assert after_302["response"]["method"] == "GET"
    assert after_302["response"]["body"] == ""
    after_307 = await _request(
        ALLOW_PRIVATE,
        url=server.url("/redirect-to?status=307&target=/echo"),
        method="POST",
        body={"a": 1},
    )
    assert after_307["response"]["method"] == "POST"
    assert json.loads(after_307["response"]["body"]) == {"a": 1}


async def test_credentials_are_not_sent_to_another_origin(server: LocalServer) -> None:
    target = server.url("/echo", host="localhost")
    out = await _request(
        ALLOW_PRIVATE,
        url=server.url(f"/redirect-to?target={target}"),
        headers={"Authorization": "Bearer secret", "X-Other": "1"},
    )
    assert "authorization" not in out["response"]["headers"]
    assert out["response"]["headers"]["x-other"] == "1"


async def test_too_many_redirects(server: LocalServer) -> None:
    before = len(server.requests)
    with pytest.raises(BlockError, match="5 redirects"):
        await _request(ALLOW_PRIVATE, url=server.url("/loop"))
    assert len(server.requests) - before == 6  # the request and five redirects


async def test_response_larger_than_10_mb_is_refused(server: LocalServer) -> None:
    with pytest.raises(BlockError, match="larger than 10 MB"):
        await _request(ALLOW_PRIVATE, url=server.url("/big"))


async def test_timeout(server: LocalServer) -> None:
    started = time.monotonic()
    with pytest.raises(BlockError, match="timed out"):
        await _request(ALLOW_PRIVATE, url=server.url("/slow"), timeout_seconds=1)
    assert time.monotonic() - started < 3


async def test_connection_failure_is_a_block_error() -> None:
    with pytest.raises(BlockError, match="failed"):
        await _request(ALLOW_PRIVATE, url=f"http://127.0.0.1:{_free_port()}/")


@pytest.mark.parametrize(
    "bad",
    [
        {"method": "TRACE"},
        {"timeout_seconds": 0},
        {"timeout_seconds": 121},
        {"headers": "x"},
        {"headers": {"X-Name": "café"}},
        {"headers": {"X-Name": "a\r\nInjected: 1"}},
        {"headers": {"Bad Name": "x"}},
        {"headers": {"": "x"}},
        {"headers": {"X-Name:": "x"}},
    ],
)
def test_input_validation(bad: dict[str, Any]) -> None:
    with pytest.raises(InvalidBlockInput):
        HttpRequest().validate_input({"url": "http://example.com/", **bad})


# --- the private-address guard --------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/",
        "http://localhost:{port}/",
        "http://[::1]:{port}/",
        "http://127.0.0.2:{port}/",
        "http://[::ffff:127.0.0.1]:{port}/",
        "http://2130706433:{port}/",
        "http://0x7f000001:{port}/",
        "http://127.1:{port}/",
        "http://0.0.0.0:{port}/",
        "http://10.0.0.1/",
        "http://192.168.1.1/",
        "http://169.254.169.254/latest/meta-data/",
        "https://[fe80::1]/",
    ],
)
async def test_private_addresses_are_refused_before_connecting(
    server: LocalServer, url: str
) -> None:
    before = len(server.requests)
    with pytest.raises(BlockError, match="refuses private address"):
        await _request(DEFAULT, url=url.format(port=server.port), timeout_seconds=2)
    assert len(server.requests) == before


@pytest.mark.parametrize(
    "url", ["ftp://127.0.0.1/file", "file:///etc/passwd", "gopher://example.com/", "/relative"]
)
@pytest.mark.parametrize("settings", [DEFAULT, ALLOW_PRIVATE], ids=["default", "allow-private"])
async def test_only_http_and_https(url: str, settings: Settings) -> None:
    with pytest.raises(BlockError, match="only fetches http and https"):
        await _request(settings, url=url)


@pytest.mark.parametrize("url", ["http://example.com:70000/", "https://1.1.1.1:0/"])
@pytest.mark.parametrize("settings", [DEFAULT, ALLOW_PRIVATE], ids=["default", "allow-private"])
async def test_a_port_out_of_range_is_a_clear_block_error(url: str, settings: Settings) -> None:
    with pytest.raises(BlockError, match="not 1 to 65535"):
        await _request(settings, url=url)


async def test_redirect_to_another_scheme_is_refused(server: LocalServer) -> None:
    with pytest.raises(BlockError, match="only fetches http and https"):
        await _request(ALLOW_PRIVATE, url=server.url("/redirect-to?target=file:///etc/passwd"))


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "fe80::1%eth0",
        "fc00::1",
        "fec0::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "64:ff9b::7f00:1",
        "2002:7f00:1::1",
        "2002:a00:1::1",
        "not-an-address",
    ],
)
def test_non_global_addresses_are_not_public(address: str) -> None:
    assert not is_public_address(address)


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "2002:808:808::1"]
)
def test_global_addresses_are_public(address: str) -> None:
    assert is_public_address(address)


async def test_check_public_url() -> None:
    # Literal addresses resolve without DNS, so this works offline.
    assert await check_public_url("http://93.184.216.34/a", DEFAULT) == ["93.184.216.34"]
    assert await check_public_url("https://[2606:4700:4700::1111]/", DEFAULT) == [
        "2606:4700:4700::1111"
    ]
    # What a redirect's Location is checked with: a public page sending us home is refused.
    for location in ("http://127.0.0.1/", "http://2130706433/", "http://[::ffff:7f00:1]/"):
        with pytest.raises(BlockError, match="refuses private address"):
            await check_public_url(location, DEFAULT)
    assert await check_public_url("http://127.0.0.1/", ALLOW_PRIVATE) == []
    with pytest.raises(BlockError, match="cannot resolve"):
        await check_public_url("http://no-such-host.invalid/", DEFAULT)


async def test_redirect_to_a_private_address_is_refused(
    server: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Pretend 127.0.0.1 is a public server; 127.0.0.2 stays private. The first request
    # must go through and its redirect to 127.0.0.2 must be refused before connecting.
    monkeypatch.setattr(http_block, "is_public_address", lambda address: address == "127.0.0.1")
    target = server.url("/json", host="127.0.0.2")
    before = len(server.requests)
    with pytest.raises(BlockError, match=r"refuses private address 127\.0\.0\.2"):
        await _request(DEFAULT, url=server.url(f"/redirect-to?target={target}"))
    assert [path for _, path, _ in server.requests[before:]] == ["/redirect-to"]


async def test_connection_goes_to_the_checked_address(
    server: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # DNS rebinding: the name resolves to an allowed address when checked and to
    # nothing afterwards. The block must connect to the address it checked.
    real_getaddrinfo = socket.getaddrinfo
    answers = iter(["127.0.0.1"])

    def rebinding_getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "rebind.example":
            address = next(answers, None)
            if address is None:
                raise socket.gaierror(socket.EAI_NONAME, "rebound")
            return real_getaddrinfo(address, port, *args, **kwargs)
        return real_getaddrinfo(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding_getaddrinfo)
    monkeypatch.setattr(http_block, "is_public_address", lambda address: address == "127.0.0.1")
    before = len(server.requests)
    out = await _request(DEFAULT, url=server.url("/json", host="rebind.example"))
    assert out["response"] == {"hello": "world", "n": 1}
    assert server.requests[before:] == [("GET", "/json", f"rebind.example:{server.port}")]


# --- stored credentials (issue 16) -------------------------------------------------


def _with_credentials(kind: str, secret: str) -> BlockRunContext:
    return BlockRunContext(
        settings=ALLOW_PRIVATE,
        user_id=uuid.uuid4(),
        credentials={"http_credentials": CredentialsSecret("example", kind, secret)},
    )


async def test_bearer_credentials_are_sent_and_never_yielded(server: LocalServer) -> None:
    secret = "tok-" + uuid.uuid4().hex
    out = dict(
        await run_block(
            HttpRequest(),
            # A typed-in Authorization header loses to the stored credentials.
            {"url": server.url("/echo"), "headers": {"Authorization": "Bearer typed"}},
            _with_credentials("BEARER", secret),
        )
    )
    # The echo server sent the header straight back: the block yields it masked.
    assert out["response"]["headers"]["authorization"] == "Bearer ***"
    assert secret not in json.dumps(out)


async def test_basic_credentials_are_sent_base64_and_never_yielded(server: LocalServer) -> None:
    password = "pw-" + uuid.uuid4().hex
    out = dict(
        await run_block(
            HttpRequest(),
            {"url": server.url("/echo")},
            _with_credentials("BASIC", f"me:{password}"),
        )
    )
    assert out["response"]["headers"]["authorization"] == "Basic ***"
    encoded = base64.b64encode(f"me:{password}".encode()).decode()
    assert password not in json.dumps(out) and encoded not in json.dumps(out)


async def test_stored_credentials_do_not_follow_a_redirect_to_another_origin(
    server: LocalServer,
) -> None:
    target = server.url("/echo", host="localhost")
    out = dict(
        await run_block(
            HttpRequest(),
            {"url": server.url(f"/redirect-to?target={target}")},
            _with_credentials("BEARER", "tok-" + uuid.uuid4().hex),
        )
    )
    assert "authorization" not in out["response"]["headers"]


async def test_an_error_naming_the_secret_is_masked(server: LocalServer) -> None:
    secret = "tok-" + uuid.uuid4().hex
    # The URL itself carries the secret (a user pasted it): the failure quotes the URL.
    with pytest.raises(BlockError) as failure:
        await run_block(
            HttpRequest(),
            {"url": f"http:///{secret}"},
            _with_credentials("BEARER", secret),
        )
    assert secret not in str(failure.value) and "***" in str(failure.value)
