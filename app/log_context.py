"""Structured logs: one JSON object per line, carrying the request id, user id
and execution id of whatever the line is about.

Those ids live in a per-request (per-job) dict held by a context variable.
It is a dict, not three variables, so a value bound deep inside a resolver
(which graphql-core may run in a child task) is still seen by the log lines
the request writes afterwards.
"""

from __future__ import annotations

import logging
import sys
import uuid
from contextvars import ContextVar
from typing import Any

from pythonjsonlogger.json import JsonFormatter

FIELDS = ("request_id", "user_id", "execution_id")

_current: ContextVar[dict[str, str] | None] = ContextVar("log_context", default=None)


def start(**fields: Any) -> dict[str, str]:
    """A fresh context for one request or job (replaces any inherited one)."""
    values = {k: str(v) for k, v in fields.items() if v is not None}
    _current.set(values)
    return values


def bind(**fields: Any) -> None:
    """Add ids to the current request's or job's context."""
    values = _current.get()
    if values is None:
        values = start()
    values.update({k: str(v) for k, v in fields.items() if v is not None})


def current() -> dict[str, str]:
    return dict(_current.get() or {})


def new_request_id() -> str:
    return uuid.uuid4().hex


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        values = _current.get() or {}
        for name in FIELDS:
            if not hasattr(record, name):
                setattr(record, name, values.get(name))
        return True


def configure(level: str, json_lines: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_ContextFilter())
    if json_lines:
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(
            logging.Formatter(
                "%(asctime)s %(levelname)s %(name)s [%(request_id)s %(user_id)s "
                "%(execution_id)s]: %(message)s"
            )
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
