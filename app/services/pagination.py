"""Opaque cursors for newest-first lists: (created_at, row id) of the last item seen."""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tortoise.expressions import Q

from app.errors import bad_input


@dataclass(frozen=True)
class Cursor:
    created_at: datetime
    row_id: str


def encode_cursor(created_at: datetime, row_id: Any) -> str:
    raw = json.dumps([created_at.isoformat(), str(row_id)], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> Cursor:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created_at, row_id = json.loads(base64.urlsafe_b64decode(padded.encode()))
        at = datetime.fromisoformat(created_at)
        # In UTC here, as the database compares it: a time that has no UTC form
        # (year 1 at +14:00) is a bad cursor, not a database error.
        return Cursor(at.astimezone(UTC) if at.tzinfo else at, str(row_id))
    except (ValueError, TypeError, OverflowError) as exc:
        raise bad_input("Invalid cursor", field="after") from exc


def check_page_size(first: int, maximum: int) -> int:
    if not 1 <= first <= maximum:
        raise bad_input(f"first must be between 1 and {maximum}", field="first")
    return first


def rows_after(
    after: str, *, time_field: str = "created_at", id_field: str = "id", ascending: bool = False
) -> Q:
    """The rows that come after the cursor `after` in (time, id) order: newest first,
    unless `ascending`. The id breaks ties, so rows sharing a time are never dropped."""
    cursor = decode_cursor(after)
    try:
        row_id = uuid.UUID(cursor.row_id)
    except ValueError as exc:
        raise bad_input("Invalid cursor", field="after") from exc
    past = "gt" if ascending else "lt"
    return Q(**{f"{time_field}__{past}": cursor.created_at}) | Q(
        **{time_field: cursor.created_at, f"{id_field}__{past}": row_id}
    )
