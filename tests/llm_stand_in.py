"""A local stand-in for an OpenAI-compatible chat completions API (and a plain HTTP
endpoint that echoes what it got): it speaks the real protocol over real sockets,
records what it received, and can be told to answer like a hostile server would,
echoing the caller's credentials back in its reply or its errors."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from app.settings import Settings


@dataclass
class StandIn:
    """The fake provider: what it got, and what it answers next."""

    port: int
    requests: list[dict[str, Any]] = field(default_factory=list)
    reply_text: str = "Hello from the model."
    status: int = 200
    error_body: Any = None
    # Hostile: put the Authorization header it received into its reply or error.
    echo_authorization: bool = False

    @property
    def settings(self) -> Settings:
        return Settings(LLM_API_BASE=f"http://127.0.0.1:{self.port}/v1", LLM_API_KEY="sk-test")

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def echo_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/echo"

    def reset(self) -> None:
        self.requests.clear()
        self.reply_text = "Hello from the model."
        self.status = 200
        self.error_body = None
        self.echo_authorization = False


def build_app(stand_in: StandIn) -> web.Application:
    async def chat_completions(request: web.Request) -> web.Response:
        body = await request.json()
        stand_in.requests.append({"headers": dict(request.headers), "json": body})
        echoed = request.headers.get("Authorization", "") if stand_in.echo_authorization else ""
        if stand_in.status != 200:
            if stand_in.echo_authorization:
                return web.json_response(
                    {"error": {"message": f"Incorrect API key provided: {echoed}"}},
                    status=stand_in.status,
                )
            if isinstance(stand_in.error_body, str):
                return web.Response(text=stand_in.error_body, status=stand_in.status)
            return web.json_response(stand_in.error_body, status=stand_in.status)
        text = stand_in.reply_text + (f" (you sent {echoed})" if echoed else "")
        return web.json_response(
            {
                "id": "chatcmpl-test",
                "object": "chat.completion",
                "created": 1700000000,
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19},
            }
        )

    async def echo(request: web.Request) -> web.Response:
        """Answers with every header it received, as httpbin's /anything does."""
        stand_in.requests.append({"headers": dict(request.headers), "path": request.path})
        return web.json_response({"headers": dict(request.headers)})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_route("*", "/echo", echo)
    return app


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def start_stand_in() -> tuple[StandIn, web.AppRunner]:
    stand_in = StandIn(port=free_port())
    runner = web.AppRunner(build_app(stand_in), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", stand_in.port).start()
    return stand_in, runner
