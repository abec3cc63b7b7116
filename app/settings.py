"""Settings: read once from the environment (or `.env`) into one `Settings` object.

The names are the ones OPERATIONS.md promises operators; nothing else in the
code reads `os.environ`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from functools import lru_cache
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

log = logging.getLogger(__name__)

DEV_JWT_SECRET = "dev-jwt-secret-change-me-0123456789abcdef"
DEV_API_KEY_PEPPER = "dev-api-key-pepper-change-me"
# Dev mode only: a fixed Fernet key, so stored credentials survive restarts of `make dev`.
DEV_CREDENTIALS_KEY = base64.urlsafe_b64encode(
    hashlib.sha256(b"agentgraph-dev-credentials-key-change-me").digest()
).decode()

# Credits granted once per user for these onboarding steps (1 credit = 1 cent).
DEFAULT_ONBOARDING_REWARDS: dict[str, int] = {
    "WELCOME": 100,
    "AGENT_NEW_RUN": 100,
    "MARKETPLACE_VISIT": 100,
    "MARKETPLACE_ADD_AGENT": 100,
    "MARKETPLACE_RUN_AGENT": 100,
    "BUILDER_SAVE_AGENT": 100,
    "BUILDER_RUN_AGENT": 100,
    "GET_RESULTS": 300,
    "RUN_AGENTS": 300,
}


# Where a local frontend or the API itself runs while developing.
DEV_ORIGINS = (
    "http://localhost:3000",
    "http://127.0.0.1:3000",
    "http://localhost:8000",
    "http://127.0.0.1:8000",
)


def origin_of(url: str) -> str:
    """`scheme://host[:port]` of a URL, as browsers send it in `Origin`; "*" stays."""
    if url.strip() == "*":
        return "*"
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not an http(s) origin")
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    default_port = {"http": 80, "https": 443}[parts.scheme]
    port = f":{parts.port}" if parts.port and parts.port != default_port else ""
    return f"{parts.scheme}://{host}{port}"


class InsecureSettingsError(RuntimeError):
    """Raised at start-up when production would run on a development secret."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=True)

    # "dev" allows the built-in development secrets (with a warning); anything
    # else is production and refuses them.
    ENVIRONMENT: Literal["dev", "production"] = "dev"

    DATABASE_URL: str = "sqlite://./data/agentgraph.sqlite3"
    REDIS_URL: str = "redis://127.0.0.1:6379/0"
    # Every Redis key this process writes starts with this (tests use one per run).
    REDIS_PREFIX: str = "agentgraph:"

    JWT_SECRET: str = DEV_JWT_SECRET
    JWT_AUDIENCE: str = "authenticated"
    API_KEY_PEPPER: str = DEV_API_KEY_PEPPER

    FRONTEND_BASE_URL: str = "http://localhost:3000"
    # Where this API is reached from outside: trigger URLs point here.
    PUBLIC_API_URL: str = "http://localhost:8000"

    # Fernet keys (comma-separated) that encrypt stored credentials and trigger
    # secrets: the first encrypts, every one decrypts (rotation). Required outside dev.
    CREDENTIALS_ENCRYPTION_KEY: str | None = None
    # Webhook triggers: body size cap, signed deliveries a minute per trigger, and
    # how far a signature's timestamp may be from now.
    TRIGGER_MAX_BODY_BYTES: int = Field(default=1_000_000, ge=1)
    TRIGGER_RATE_LIMIT_PER_MINUTE: int = Field(default=60, ge=1)
    TRIGGER_SIGNATURE_TOLERANCE_SECONDS: int = Field(default=300, ge=1)

    STRIPE_SECRET_KEY: str | None = None
    STRIPE_WEBHOOK_SECRET: str | None = None
    STRIPE_API_BASE: str | None = None

    AZURE_STORAGE_CONNECTION_STRING: str | None = None
    AZURE_STORAGE_CONTAINER: str = "agentgraph-uploads"
    UPLOAD_MAX_MB: int = Field(default=100, ge=1)
    # Per user: bytes received by POST /api/files per UTC day, and uploads a minute.
    UPLOAD_QUOTA_MB_PER_DAY: int = Field(default=1000, ge=1)
    UPLOAD_RATE_LIMIT_PER_MINUTE: int = Field(default=20, ge=1)
    CLAMD_ADDRESS: str | None = None

    STARTING_CREDITS: int = Field(default=0, ge=0)
    ONBOARDING_REWARDS: dict[str, int] = Field(
        default_factory=lambda: dict(DEFAULT_ONBOARDING_REWARDS)
    )
    ONBOARDING_ENABLED: bool = True
    # Flag name -> default for every user; per-user overrides live in the database.
    FEATURE_FLAGS: dict[str, bool] = Field(
        default_factory=lambda: {"CHAT": False, "AI_ACTIVITY_STATUS": False}
    )

    # Refunds: a top-up is refunded at once when (its amount - the balance) is at
    # most this, else filed for an admin; each user may ask this often a week.
    REFUND_AUTO_THRESHOLD: int = Field(default=500, ge=0)
    REFUND_REQUESTS_PER_WEEK: int = Field(default=1, ge=1)
    # A dispute is accepted (closed, credits deducted) when the balance minus its
    # amount stays at least this; otherwise it is contested with evidence.
    DISPUTE_ACCEPT_MIN_BALANCE: int = 500

    # Notifications: a charge that takes the balance below this warns once.
    LOW_BALANCE_CREDITS: int = Field(default=100, ge=0)
    # Runs that end are notified when scheduled, or when they ran at least this long.
    LONG_RUN_NOTIFY_SECONDS: float = Field(default=300, ge=0)
    # smtp://user:password@host:port (STARTTLS when offered) or smtps://… (TLS);
    # unset: notifications are in-app only.
    SMTP_URL: str | None = None
    MAIL_FROM: str = "agentgraph <no-reply@localhost>"

    LLM_API_BASE: str | None = None
    LLM_API_KEY: str | None = None
    ALLOW_PRIVATE_HTTP: bool = False

    GRAPHQL_EXPLORER: bool = True
    MAX_QUERY_DEPTH: int = 12
    MAX_ALIASES: int = 30
    MAX_TOKENS: int = 5000
    MAX_BODY_BYTES: int = 1_000_000
    # Characters of query text (variables not included).
    MAX_QUERY_LENGTH: int = Field(default=100_000, ge=1)
    # Checked on the query text before it is parsed (schema/document_measures.py).
    MAX_FIELDS_PER_SELECTION_SET: int = Field(default=100, ge=1)
    MAX_REPEATED_FIELDS: int = Field(default=20, ge=1)
    MAX_FIELDS: int = Field(default=1000, ge=1)
    MAX_QUERY_NODES: int = Field(default=1_000_000, ge=1)
    MAX_RESPONSE_BYTES: int = Field(default=10_000_000, ge=1)
    # Introspection fields one operation may resolve (GraphiQL's full
    # introspection of this schema resolves about 8,000).
    MAX_INTROSPECTION_FIELDS: int = Field(default=15_000, ge=1)
    MUTATION_RATE_LIMIT_PER_MINUTE: int = 120
    # Bounded runs (SEMANTICS.md §7): how deep sub-graph runs nest below their root,
    # and how many node executions one run (its sub-graph runs included) may make.
    MAX_SUBGRAPH_DEPTH: int = Field(default=10, ge=0)
    MAX_NODE_RUNS_PER_EXECUTION: int = Field(default=100_000, ge=1)
    # Fair concurrency (app/services/run_slots.py): runs of one user that hold a slot
    # (RUNNING, or admitted and starting) across all workers; the rest wait QUEUED.
    MAX_RUNNING_EXECUTIONS_PER_USER: int = Field(default=25, ge=1)
    # Top-level runs one worker process runs at a time (its run queue's arq max_jobs).
    WORKER_MAX_RUNS: int = Field(default=10, ge=1)
    # Tries of a run's job (workers/jobs/executions.py): a worker that died with the
    # run, or an error outside any block, costs one; the last ends the run FAILED.
    RUN_MAX_TRIES: int = Field(default=50, ge=2)
    # Human review: a node waiting for a person longer than this is rejected (expired).
    REVIEW_TIMEOUT_HOURS: float = Field(default=72, gt=0)
    # Characters of JSON one node run may yield (its outputs together); past it the
    # node fails (blocks that copy their inputs double a value per step).
    MAX_NODE_OUTPUT_CHARS: int = Field(default=64 * 1024 * 1024, ge=1000)
    # Per client address, for requests without valid credentials (and
    # websocket handshakes without them), shared by all API processes.
    ANONYMOUS_RATE_LIMIT_PER_MINUTE: int = Field(default=60, ge=1)
    # Unset: the client address is the TCP peer. Behind a proxy, the header it
    # sets (X-Forwarded-For: its last address is used; X-Real-IP, ...).
    CLIENT_IP_HEADER: str | None = None
    # A websocket must send connection_init (with credentials) within this.
    WEBSOCKET_INIT_TIMEOUT_SECONDS: float = Field(default=10, gt=0)
    # Set: GET /metrics needs `Authorization: Bearer <METRICS_TOKEN>`.
    METRICS_TOKEN: str | None = None
    # Allocations between collections of the API's youngest GC generation
    # (CPython's default: 700); start-up objects are frozen (app/main.py).
    GC_GEN0_THRESHOLD: int = Field(default=20_000, ge=100)
    # How long a `graphs` response is kept per user (0: not cached); any write
    # to the user's graphs retires it at once (app/services/graphs_cache.py).
    GRAPHS_CACHE_SECONDS: int = Field(default=60, ge=0, le=86_400)
    # Bytes of `graphs` responses one user may have cached between writes: each
    # variant of a query (a comment, a variable) is another entry, and a
    # response may be MAX_RESPONSE_BYTES; past this, answers are not stored.
    GRAPHS_CACHE_USER_BYTES: int = Field(default=8_000_000, ge=0)
    # How often a worker polls its queue when no wake-up came (every enqueue
    # publishes one; the poll finds deferred jobs, retries and lapsed leases).
    WORKER_POLL_SECONDS: float = Field(default=0.25, gt=0, le=3600)
    # Workers fire due schedules unless this is false.
    SCHEDULER_ENABLED: bool = True
    # Per API process; a browser tab needs one or two.
    MAX_WEBSOCKETS_PER_USER: int = Field(default=20, ge=1)
    MAX_OPERATIONS_PER_WEBSOCKET: int = Field(default=50, ge=1)

    LOG_LEVEL: str = "INFO"
    # json: one JSON object per line (the default outside dev); text: for people.
    LOG_FORMAT: Literal["json", "text"] | None = None

    @property
    def json_logs(self) -> bool:
        if self.LOG_FORMAT is not None:
            return self.LOG_FORMAT == "json"
        return self.ENVIRONMENT != "dev"

    # Origins whose browser pages may use the API: HTTP CORS and the websocket
    # Origin check. Unset: FRONTEND_BASE_URL's origin, plus DEV_ORIGINS in dev.
    # A JSON list or comma-separated; "*" allows every origin.
    ALLOWED_ORIGINS: Annotated[list[str] | None, NoDecode] = None

    @field_validator("ALLOWED_ORIGINS", mode="before")
    @classmethod
    def _origin_list(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part for part in (p.strip() for p in text.split(",")) if part]
        return value

    @field_validator("ALLOWED_ORIGINS")
    @classmethod
    def _origins_are_origins(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else [origin_of(origin) for origin in value]

    @property
    def allowed_origins(self) -> list[str]:
        if self.ALLOWED_ORIGINS is not None:
            return list(self.ALLOWED_ORIGINS)
        origins = [origin_of(self.FRONTEND_BASE_URL)]
        if self.is_dev:
            origins += [origin for origin in DEV_ORIGINS if origin not in origins]
        return origins

    @field_validator("SMTP_URL")
    @classmethod
    def _smtp_url(cls, value: str | None) -> str | None:
        value = value.strip() if value is not None else None
        if value:
            from app.clients.mailer import smtp_target

            smtp_target(value)  # refuses a malformed URL at start-up
        return value or None

    @field_validator("REDIS_PREFIX")
    @classmethod
    def _prefix_ends_with_colon(cls, value: str) -> str:
        return value if value.endswith(":") else value + ":"

    @property
    def is_dev(self) -> bool:
        return self.ENVIRONMENT == "dev"

    @property
    def credentials_encryption_keys(self) -> list[str]:
        """CREDENTIALS_ENCRYPTION_KEY as a list, first key first; in dev without one, a
        fixed development key (check_secrets refuses that outside dev)."""
        keys = [k.strip() for k in (self.CREDENTIALS_ENCRYPTION_KEY or "").split(",") if k.strip()]
        return keys or [DEV_CREDENTIALS_KEY]

    def _check_credentials_keys(self) -> None:
        from cryptography.fernet import Fernet

        for position, key in enumerate(self.credentials_encryption_keys, start=1):
            try:
                Fernet(key)
            except (ValueError, TypeError):
                # Never echo the value: it is a secret, even when malformed.
                raise InsecureSettingsError(
                    f"CREDENTIALS_ENCRYPTION_KEY: key {position} is not a Fernet key "
                    "(32 url-safe base64-encoded bytes; make one with "
                    "`python -c 'from cryptography.fernet import Fernet; "
                    "print(Fernet.generate_key().decode())'`)"
                ) from None

    def check_secrets(self) -> None:
        """Refuse development secrets outside dev mode; warn about them inside it."""
        self._check_credentials_keys()
        weak = [
            name
            for name, value, dev_value in (
                ("JWT_SECRET", self.JWT_SECRET, DEV_JWT_SECRET),
                ("API_KEY_PEPPER", self.API_KEY_PEPPER, DEV_API_KEY_PEPPER),
                (
                    "CREDENTIALS_ENCRYPTION_KEY",
                    self.credentials_encryption_keys[0],
                    DEV_CREDENTIALS_KEY,
                ),
            )
            if value == dev_value
        ]
        if not weak:
            return
        if not self.is_dev:
            raise InsecureSettingsError(
                f"{', '.join(weak)} still the development value; set "
                f"{' and '.join(weak)} or ENVIRONMENT=dev"
            )
        log.warning("using the development %s: do not expose this server", ", ".join(weak))


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


async def _release_without_reset(connection) -> None:
    """asyncpg's default reset on release costs a round trip of
    `SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`, for
    features we never use (advisory locks, cursors, LISTEN, SET). Only an open
    transaction must not travel back into the pool."""
    if connection.is_in_transaction():
        await connection.execute("ROLLBACK")


def _connection(database_url: str) -> str | dict:
    if not database_url.startswith(("postgres://", "postgresql://", "asyncpg://")):
        return database_url
    from tortoise.backends.base.config_generator import expand_db_url

    expanded = expand_db_url(database_url)
    expanded["credentials"]["reset"] = _release_without_reset
    return expanded


def tortoise_config(database_url: str | None = None) -> dict:
    """One Tortoise config for the app, the workers, the tests and aerich."""
    return {
        "connections": {"default": _connection(database_url or get_settings().DATABASE_URL)},
        "apps": {
            "models": {
                "models": ["app.models", "aerich.models"],
                "default_connection": "default",
            }
        },
        "use_tz": True,
        "timezone": "UTC",
    }


TORTOISE_ORM = tortoise_config()
