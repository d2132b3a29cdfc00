"""One error envelope for every failure: `{"error": {"type", "message", "param"}}`.

`ApiError` is what routes raise; the handlers installed by `install_error_handlers` turn it, FastAPI's request
validation errors and Starlette's HTTP errors (unknown route 404, 405, ...) into the envelope. Unexpected
exceptions become a 500 envelope in `service.middleware` (which logs them with the request id).
"""

from __future__ import annotations

from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

ERROR_TYPES: dict[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    422: "invalid_request",
    429: "too_many_requests",
    500: "internal_error",
    503: "not_ready",
}


class ApiError(Exception):
    """An error answered with `status` and the envelope; `param` names the offending field, if any."""

    def __init__(
        self, status: int, message: str, param: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.headers = headers


class BodyTooLarge(Exception):
    """A request body past its size limit, found while reading it (`service.guard`); answered with 413."""

    def __init__(self, limit: int, setting: str) -> None:
        super().__init__(f"the request body is over the limit of {limit} bytes ({setting})")


def error_type(status: int) -> str:
    return ERROR_TYPES.get(status, "client_error" if status < 500 else "server_error")


def envelope(status: int, message: str, param: str | None = None) -> dict[str, Any]:
    return {"error": {"type": error_type(status), "message": message, "param": param}}


def error_response(
    status: int, message: str, param: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(envelope(status, message, param), status_code=status, headers=headers)


def param_path(loc: Sequence[str | int]) -> str | None:
    """("body", "history", 2, "item_id") -> "history[2].item_id"; the request part ("body", ...) is dropped."""
    parts = list(loc[1:]) if loc and loc[0] in ("body", "query", "path", "header") else list(loc)
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or None


def _validation_message(error: dict[str, Any], param: str | None, more: int) -> str:
    message = str(error.get("msg", "invalid value"))
    if error.get("type") == "missing" and param is None:
        message = "a JSON object body is required"
    elif param is None and error.get("type") in ("model_attributes_type", "dict_type"):
        message = "the body must be a JSON object"
    text = f"{param}: {message}" if param else message
    return text + (f" (and {more} more error{'s' * (more > 1)})" if more else "")


def _describe(error: dict[str, Any], more: int) -> tuple[str, str | None]:
    """(message, param) of a FastAPI validation error; a JSON syntax error names its position, not a field."""
    if error.get("type") == "json_invalid":
        loc = error.get("loc", ())
        where = f" at character {loc[-1]}" if loc and isinstance(loc[-1], int) else ""
        reason = error.get("ctx", {}).get("error", "parse error")
        return f"the body is not valid JSON{where}: {reason}", None
    param = param_path(error.get("loc", ()))
    return _validation_message(error, param, more), param


async def _api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.message, exc.param, exc.headers)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    message, param = _describe(errors[0] if errors else {}, max(0, len(errors) - 1))
    return error_response(422, message, param)


def unparseable_body(cause: BaseException | None) -> tuple[int, str] | None:
    """(status, message) for a body FastAPI could not read or parse for a reason other than JSON syntax (it
    answers those with a bare 400 "There was an error parsing the body"), or None for another cause."""
    if isinstance(cause, BodyTooLarge):
        return 413, str(cause)
    if isinstance(cause, RecursionError):
        return 400, "the body is nested too deeply to parse (arrays or objects inside each other)"
    if isinstance(cause, UnicodeDecodeError):
        return 400, f"the body is not valid UTF-8 (byte {cause.start}: {cause.reason})"
    if isinstance(cause, ValueError) and "integer string conversion" in str(cause):
        return 400, "the body holds an integer with more digits than can be parsed (over 4300 digits)"
    return None


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    unparseable = unparseable_body(exc.__cause__) if exc.status_code == 400 else None
    if unparseable is not None:
        return error_response(*unparseable)
    if exc.status_code == 404 and exc.detail == HTTPStatus(404).phrase:
        message = f"no route {request.method} {request.url.path}"
    elif exc.status_code == 405:
        message = f"method {request.method} is not allowed on {request.url.path}"
    else:
        message = str(exc.detail)
    return error_response(exc.status_code, message, None, dict(exc.headers or {}))


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)


class CannotRank(Exception):
    """This ranker cannot rank this query (e.g. sasrec knows no item of the history, or the engine failed); the
    next ranker of the fallback chain answers and the response's `fallback` says `reason`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
