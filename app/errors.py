"""The one domain error type and its stable codes (SEMANTICS.md §2)."""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    UNAUTHENTICATED = "UNAUTHENTICATED"
    FORBIDDEN = "FORBIDDEN"
    NOT_FOUND = "NOT_FOUND"
    BAD_USER_INPUT = "BAD_USER_INPUT"
    GRAPH_VALIDATION_FAILED = "GRAPH_VALIDATION_FAILED"
    INSUFFICIENT_CREDITS = "INSUFFICIENT_CREDITS"
    CONFLICT = "CONFLICT"
    RATE_LIMITED = "RATE_LIMITED"
    QUERY_TOO_COMPLEX = "QUERY_TOO_COMPLEX"
    PAYMENT_PROVIDER_ERROR = "PAYMENT_PROVIDER_ERROR"
    INTERNAL = "INTERNAL"


# The HTTP status a REST route answers with for each code.
HTTP_STATUS = {
    ErrorCode.UNAUTHENTICATED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.BAD_USER_INPUT: 400,
    ErrorCode.GRAPH_VALIDATION_FAILED: 400,
    ErrorCode.INSUFFICIENT_CREDITS: 402,
    ErrorCode.CONFLICT: 409,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.QUERY_TOO_COMPLEX: 400,
    ErrorCode.PAYMENT_PROVIDER_ERROR: 502,
    ErrorCode.INTERNAL: 500,
}


class AppError(Exception):
    """A failure the client may see: a message and a code, plus optional extensions."""

    def __init__(self, code: ErrorCode, message: str, **extensions: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.extensions = extensions

    def as_extensions(self) -> dict[str, Any]:
        return {"code": self.code.value, **self.extensions}


def not_found(what: str) -> AppError:
    return AppError(ErrorCode.NOT_FOUND, f"{what} not found")


def bad_input(message: str, **extensions: Any) -> AppError:
    return AppError(ErrorCode.BAD_USER_INPUT, message, **extensions)
