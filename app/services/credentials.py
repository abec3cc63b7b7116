"""Stored credentials: create, list (metadata only), delete; check a run's mapping of
credentials fields to them; decrypt them for the node run that needs them.

The secret is encrypted before it is stored and decrypted only inside a worker's
node run (node_credentials); nothing here returns, logs or reports it. Another
user's credentials id behaves exactly like an absent one (§3).
"""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from typing import Any

from tortoise.expressions import Q

from app.blocks.base import Block, BlockError
from app.blocks.credentials import CredentialsField, CredentialsSecret
from app.blocks.registry import get_block
from app.clock import utcnow
from app.errors import bad_input, not_found
from app.models import CredentialsType, Execution, Node, StoredCredentials, Trigger
from app.services.graph_validation import Validation, parse_uuid
from app.services.secret_box import SecretUnreadable, secret_box
from app.settings import Settings

MAX_TITLE = 200
MIN_SECRET = 8
MAX_SECRET = 10_000
MAX_CREDENTIALS_PER_USER = 1000
PROVIDER_PATTERN = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
# lastUsedAt is written at most this often per credentials (one write per node run
# would be a write per LLM call).
LAST_USED_RESOLUTION = timedelta(minutes=1)
NO_SUCH_CREDENTIALS = "no such credentials"


# ------------------------------------------------------------------ managing


def _check_secret(kind: CredentialsType, secret: str) -> None:
    # Messages never quote the secret.
    # Short secrets are refused: outputs are searched for the secret to mask it, and
    # masking every "abc" in a page would destroy it while protecting nothing.
    if not MIN_SECRET <= len(secret) <= MAX_SECRET:
        raise bad_input(f"secret must be {MIN_SECRET} to {MAX_SECRET} characters", field="secret")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in secret):
        # It goes into HTTP headers: a line break would smuggle headers in.
        raise bad_input("secret must not contain control characters", field="secret")
    if kind == CredentialsType.BASIC:
        username, colon, _ = secret.partition(":")
        if not colon or not username:
            raise bad_input("a BASIC secret is username:password", field="secret")


async def create_credentials(
    settings: Settings,
    user_id: uuid.UUID,
    provider: str,
    kind: CredentialsType,
    title: str,
    secret: str,
) -> StoredCredentials:
    provider = provider.strip().lower()
    if not PROVIDER_PATTERN.fullmatch(provider):
        raise bad_input(
            "provider is 1 to 64 of a-z 0-9 _ . - (starting with a letter or digit)",
            field="provider",
        )
    title = title.strip()
    if not title or len(title) > MAX_TITLE:
        raise bad_input(f"title must be 1 to {MAX_TITLE} characters", field="title")
    _check_secret(kind, secret)
    if await StoredCredentials.filter(user_id=user_id).count() >= MAX_CREDENTIALS_PER_USER:
        raise bad_input(f"at most {MAX_CREDENTIALS_PER_USER} stored credentials per user")
    return await StoredCredentials.create(
        id=uuid.uuid4(),
        user_id=user_id,
        provider=provider,
        type=kind,
        title=title,
        encrypted_secret=secret_box(settings).encrypt(secret),
    )


async def list_credentials(user_id: uuid.UUID, provider: str | None) -> list[StoredCredentials]:
    query = StoredCredentials.filter(user_id=user_id)
    if provider is not None:
        query = query.filter(provider=provider.strip().lower())
    return await query.order_by("-created_at", "-id")


async def get_credentials(user_id: uuid.UUID, credentials_id: str) -> StoredCredentials | None:
    parsed = parse_uuid(credentials_id)
    return await StoredCredentials.get_or_none(id=parsed, user_id=user_id) if parsed else None


async def delete_credentials(user_id: uuid.UUID, credentials_id: str) -> uuid.UUID:
    """Runs, presets and schedules that name them fail validation from now on."""
    parsed = parse_uuid(credentials_id)
    if parsed is None or not await StoredCredentials.filter(id=parsed, user_id=user_id).delete():
        raise not_found("Credentials")
    return parsed


async def reencrypt_all(settings: Settings, batch: int = 500) -> tuple[int, int]:
    """Re-encrypt every stored secret (credentials and trigger secrets) under the first
    key, after a new key was put first. Returns (rewritten, unreadable): secrets no
    configured key decrypts are left as they are."""
    box = secret_box(settings)
    changed = unreadable = 0
    for model in (StoredCredentials, Trigger):
        last: uuid.UUID | None = None
        while True:
            query = model.all().order_by("id").limit(batch)
            if last is not None:
                query = query.filter(id__gt=last)
            rows = await query
            if not rows:
                break
            for row in rows:
                try:
                    rotated = box.rotate(row.encrypted_secret)
                except SecretUnreadable:
                    unreadable += 1
                    continue
                # Only where the row still holds what was read: a secret rotated or
                # replaced meanwhile keeps its newer value.
                changed += await model.filter(
                    id=row.id, encrypted_secret=row.encrypted_secret
                ).update(encrypted_secret=rotated)
            last = rows[-1].id
    return changed, unreadable


# ------------------------------------------------------------------ checking a run


def credentials_needs(nodes: list[Node]) -> list[tuple[Node, str, CredentialsField]]:
    """Every (node, field, what it needs) among the nodes' blocks."""
    found = []
    for node in nodes:
        block = get_block(node.block_id)
        for name, wanted in (block.credentials_fields if block else {}).items():
            found.append((node, name, wanted))
    return found


def _mismatch(wanted: CredentialsField, row: StoredCredentials) -> str | None:
    if wanted.provider is not None and row.provider != wanted.provider:
        return f"needs {wanted.provider} credentials"
    if str(row.type) not in wanted.types:
        return f"needs credentials of type {' or '.join(wanted.types)}"
    return None


async def check_credentials(
    settings: Settings,
    user_id: uuid.UUID,
    nodes: list[Node],
    credentials_inputs: dict[str, Any],
    result: Validation,
) -> None:
    """Adds node errors for credentials that are missing (required ones), not the
    user's, absent, or of the wrong provider or type; `nodes` are the graph's and
    its sub-graphs'. Field names no block declares are a graph-level problem."""
    needs = credentials_needs(nodes)
    ids = {v for v in credentials_inputs.values() if parse_uuid(v) is not None}
    rows = {
        str(row.id): row
        for row in (
            await StoredCredentials.filter(
                id__in=[parse_uuid(v) for v in ids], user_id=user_id
            ).only("id", "provider", "type")
            if ids
            else []
        )
    }
    for node, name, wanted in needs:
        value = credentials_inputs.get(name)
        if value is None:
            if wanted.is_required(settings):
                result.add(str(node.id), name, f"credentials required: {wanted.description}")
            continue
        parsed = parse_uuid(value) if isinstance(value, str) else None
        row = rows.get(str(parsed)) if parsed else None
        if row is None:
            result.add(str(node.id), name, NO_SUCH_CREDENTIALS)
            continue
        problem = _mismatch(wanted, row)
        if problem:
            result.add(str(node.id), name, problem)
    unknown = sorted(set(credentials_inputs) - {name for _, name, _ in needs})
    if unknown and result.valid:
        result.message = f"Unknown credentials input(s): {', '.join(unknown)}"


def check_mapping_shape(credentials_inputs: Any) -> dict[str, Any]:
    if credentials_inputs is None:
        return {}
    if not isinstance(credentials_inputs, dict):
        raise bad_input("credentialsInputs must be an object", field="credentialsInputs")
    return credentials_inputs


# ------------------------------------------------------------------ at run time


async def node_credentials(
    settings: Settings, execution: Execution, block: Block
) -> dict[str, CredentialsSecret]:
    """The decrypted credentials a node run of `block` gets, by field. Credentials
    deleted (or changed) since the run was checked fail the node, never the worker."""
    mapping = execution.credentials_inputs or {}
    wanted = {name: mapping[name] for name in block.credentials_fields if name in mapping}
    if not wanted:
        return {}
    user_id = execution.user_id  # type: ignore[attr-defined]
    ids = [parse_uuid(value) for value in wanted.values()]
    rows = {
        row.id: row
        for row in await StoredCredentials.filter(
            id__in=[i for i in ids if i is not None], user_id=user_id
        )
    }
    box = secret_box(settings)
    resolved: dict[str, CredentialsSecret] = {}
    for name, value in wanted.items():
        row = rows.get(parse_uuid(value))
        if row is None:
            raise BlockError(f"the credentials for {name} no longer exist")
        problem = _mismatch(block.credentials_fields[name], row)
        if problem:
            raise BlockError(f"the credentials for {name}: {problem}")
        try:
            secret = box.decrypt(row.encrypted_secret)
        except SecretUnreadable:
            raise BlockError(
                f"the credentials for {name} cannot be decrypted with this server's keys"
            ) from None
        resolved[name] = CredentialsSecret(provider=row.provider, type=str(row.type), secret=secret)
    now = utcnow()
    await StoredCredentials.filter(
        Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - LAST_USED_RESOLUTION),
        id__in=list(rows),
    ).update(last_used_at=now)
    return resolved
