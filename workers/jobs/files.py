"""Expired uploads: their blobs and rows removed (SEMANTICS.md §10)."""

from __future__ import annotations

import logging
from typing import Any

from app.services.files import delete_expired_files as delete_expired_files_now

log = logging.getLogger(__name__)


async def delete_expired_files(ctx: dict[str, Any]) -> int:
    """Cron job; safe to run again or on several workers (deletion repeats harmlessly)."""
    deleted = await delete_expired_files_now(ctx["settings"])
    if deleted:
        log.info("deleted %d expired uploaded files", deleted)
    return deleted
