"""The current time, timezone-aware UTC; one place so tests of time can pin it."""

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)
