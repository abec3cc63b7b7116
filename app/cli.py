"""The `agentgraph` command (OPERATIONS.md lists what each one does)."""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from urllib.parse import urlparse

from app.settings import get_settings

DEMO_USER_ID = uuid.UUID("00000000-0000-4000-8000-000000000001")
DEMO_EMAIL = "demo@agentgraph.local"


def _configure_logging() -> None:
    from app import log_context

    settings = get_settings()
    log_context.configure(settings.LOG_LEVEL, json_lines=settings.json_logs)


# How `serve` runs uvicorn (bench/ serves its bare baseline the same way).
UVICORN_OPTIONS = {
    # Keep our handlers: uvicorn's own lines become structured ones too.
    "log_config": None,
    # Uvicorn's websocket size cap in bytes (request bodies are capped by the app).
    "ws_max_size": 1_048_576,
    # Events are small JSON; deflate state cost ~50 KiB per open websocket.
    "ws_per_message_deflate": False,
    "timeout_graceful_shutdown": 10,
}


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    _configure_logging()
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        log_level=get_settings().LOG_LEVEL.lower(),
        **UVICORN_OPTIONS,
    )
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from arq.worker import check_health, get_kwargs

    from workers.lease import shorten_in_progress
    from workers.settings import worker_settings
    from workers.wakeup import WakeableWorker

    _configure_logging()
    settings_cls = worker_settings()
    if args.check:
        return check_health(settings_cls)
    shorten_in_progress(WakeableWorker(**get_kwargs(settings_cls))).run()
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from app.schema_migrations import apply_migrations

    url = args.database_url or get_settings().DATABASE_URL
    applied = asyncio.run(apply_migrations(url))
    print(f"applied {len(applied)} migration(s)" + (": " + ", ".join(applied) if applied else ""))
    return 0


def cmd_makemigrations(args: argparse.Namespace) -> int:
    from app.schema_migrations import make_migration

    path = make_migration(args.name)
    print(f"wrote {path}" if path else "no changes")
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    from app.auth import issue_jwt

    user_id = args.user_id or uuid.uuid4()
    print(
        issue_jwt(
            get_settings(), user_id, args.email, admin=args.admin, expires_in=args.days * 86400
        )
    )
    return 0


def cmd_export_schema(args: argparse.Namespace) -> int:
    from resolvers.root import build_schema, possible_types

    schema = build_schema(get_settings())
    if args.possible_types:
        sys.stdout.write(json.dumps(possible_types(schema), indent=2) + "\n")
    else:
        sys.stdout.write(schema.as_str() + "\n")
    return 0


def cmd_flag(args: argparse.Namespace) -> int:
    from tortoise import Tortoise

    from app.services.feature_flags import set_override
    from app.settings import tortoise_config

    enabled = {"on": True, "off": False, "default": None}[args.state]

    async def run() -> None:
        await Tortoise.init(config=tortoise_config(get_settings().DATABASE_URL))
        try:
            await set_override(args.user_id, args.flag.upper(), enabled)
        finally:
            await Tortoise.close_connections()

    asyncio.run(run())
    print(f"{args.flag.upper()} for {args.user_id}: {args.state}")
    return 0


def cmd_store_publish(args: argparse.Namespace) -> int:
    from tortoise import Tortoise

    from app.services.store import publish_graph
    from app.settings import tortoise_config

    async def run():
        await Tortoise.init(config=tortoise_config(get_settings().DATABASE_URL))
        try:
            return await publish_graph(args.graph_id, args.integration or None)
        finally:
            await Tortoise.close_connections()

    version = asyncio.run(run())
    print(
        f"published {version.name!r} (graph version {version.graph_version}) "
        f"as listing version {version.id}"
    )
    return 0


def cmd_credentials_reencrypt(args: argparse.Namespace) -> int:
    from tortoise import Tortoise

    from app.services.credentials import reencrypt_all
    from app.settings import tortoise_config

    settings = get_settings()
    settings.check_secrets()

    async def run() -> tuple[int, int]:
        await Tortoise.init(config=tortoise_config(settings.DATABASE_URL))
        try:
            return await reencrypt_all(settings)
        finally:
            await Tortoise.close_connections()

    changed, unreadable = asyncio.run(run())
    print(f"re-encrypted {changed} secret(s) under the first CREDENTIALS_ENCRYPTION_KEY")
    if unreadable:
        print(
            f"{unreadable} secret(s) could not be decrypted with any configured key; left as is",
            file=sys.stderr,
        )
        return 1
    return 0


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def cmd_dev(args: argparse.Namespace) -> int:
    """API + worker (+ a local Redis when none answers), SQLite in ./data, a demo token."""
    settings = get_settings()
    children: list[subprocess.Popen] = []
    redis_url = urlparse(settings.REDIS_URL)
    redis_host, redis_port = redis_url.hostname or "127.0.0.1", redis_url.port or 6379
    if not _answers(redis_host, redis_port):
        server = shutil.which("redis-server")
        if server is None:
            print(
                f"nothing answers at {settings.REDIS_URL} and redis-server is not installed "
                "(apt-get install redis-server)",
                file=sys.stderr,
            )
            return 1
        print(f"starting a local Redis on {redis_host}:{redis_port}")
        children.append(
            subprocess.Popen(
                [
                    server,
                    "--bind",
                    redis_host,
                    "--port",
                    str(redis_port),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ],
                stdout=subprocess.DEVNULL,
            )
        )
        for _ in range(50):
            if _answers(redis_host, redis_port):
                break
            time.sleep(0.1)
    cmd_migrate(argparse.Namespace(database_url=None))
    from app.auth import issue_jwt

    token = issue_jwt(settings, DEMO_USER_ID, DEMO_EMAIL, expires_in=30 * 86400)
    exe = [sys.executable, "-m", "app.cli"]
    children.append(subprocess.Popen([*exe, "worker"]))
    children.append(
        subprocess.Popen([*exe, "serve", "--host", args.host, "--port", str(args.port)])
    )
    print(
        "\n"
        f"  GraphiQL:  http://{args.host}:{args.port}/graphql\n"
        f'  Headers:   {{"Authorization": "Bearer {token}"}}\n'
        f"  (demo user {DEMO_EMAIL}; Ctrl-C stops everything)\n",
        flush=True,
    )
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        while not stopping and all(child.poll() is None for child in children):
            time.sleep(0.2)
    finally:
        for child in reversed(children):
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in reversed(children):
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agentgraph", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the API under uvicorn")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.set_defaults(func=cmd_serve)

    worker = sub.add_parser("worker", help="run an arq worker")
    worker.add_argument("--check", action="store_true", help="health check and exit")
    worker.set_defaults(func=cmd_worker)

    dev = sub.add_parser("dev", help="API + worker for local development")
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--port", type=int, default=8000)
    dev.set_defaults(func=cmd_dev)

    migrate = sub.add_parser("migrate", help="apply the aerich migrations to DATABASE_URL")
    migrate.add_argument("--database-url", default=None)
    migrate.set_defaults(func=cmd_migrate)

    make = sub.add_parser("makemigrations", help="write the next migration (both dialects)")
    make.add_argument("name")
    make.set_defaults(func=cmd_makemigrations)

    token = sub.add_parser("token", help="print a signed JWT")
    token.add_argument("--email", required=True)
    token.add_argument("--user-id", type=uuid.UUID, default=None)
    token.add_argument("--admin", action="store_true")
    token.add_argument("--days", type=int, default=30)
    token.set_defaults(func=cmd_token)

    export = sub.add_parser("export-schema", help="print the GraphQL SDL")
    export.add_argument(
        "--possible-types",
        action="store_true",
        help="print the unions and interfaces with their members as JSON (Apollo's possibleTypes)",
    )
    export.set_defaults(func=cmd_export_schema)

    flag = sub.add_parser("flag", help="override a feature flag for one user")
    flag.add_argument("user_id", type=uuid.UUID)
    flag.add_argument("flag")
    flag.add_argument("state", choices=["on", "off", "default"])
    flag.set_defaults(func=cmd_flag)

    store = sub.add_parser("store", help="store listings")
    store_sub = store.add_subparsers(dest="store_command", required=True)
    publish = store_sub.add_parser("publish", help="publish a graph's active version")
    publish.add_argument("graph_id")
    publish.add_argument(
        "--integration",
        action="append",
        help="an integration it uses (repeatable); default: its categories",
    )
    publish.set_defaults(func=cmd_store_publish)

    creds = sub.add_parser("credentials", help="stored credentials")
    creds_sub = creds.add_subparsers(dest="credentials_command", required=True)
    reencrypt = creds_sub.add_parser(
        "reencrypt",
        help="re-encrypt every stored secret under the first CREDENTIALS_ENCRYPTION_KEY",
    )
    reencrypt.set_defaults(func=cmd_credentials_reencrypt)
    return parser


def main(argv: list[str] | None = None) -> int:
    from app.errors import AppError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except AppError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
