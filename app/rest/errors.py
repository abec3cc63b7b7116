"""REST answers for failures: `{"error": CODE, "message": ...}` with the code's status."""

from __future__ import annotations

from starlette.responses import JSONResponse

from app.errors import HTTP_STATUS, AppError, ErrorCode


def error_response(code: ErrorCode, message: str) -> JSONResponse:
    return JSONResponse({"error": code.value, "message": message}, status_code=HTTP_STATUS[code])


def app_error_response(error: AppError) -> JSONResponse:
    return error_response(error.code, error.message)
