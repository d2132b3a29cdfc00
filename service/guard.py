"""What every request passes before any of its body is read: the admin token, then the body size limit.

FastAPI reads and parses a body before it runs a route's dependencies, so a check written as a dependency comes
too late: a client without a token could make the server read and parse 20 MB, and the in-flight limit (429)
does not count that. `RequestGuard` (a plain ASGI middleware) answers first:

- a path under `/admin/` without the right bearer token: 401 (403 while no token is configured), unread;
- a `Content-Length` over the limit (`REASONREC_MAX_BODY_BYTES`, or `REASONREC_MAX_ADMIN_BODY_BYTES` for admin
  paths once the token is checked): 413, unread;
- a body without a length (chunked) is counted as it arrives and refused with 413 at the first byte over.

Every refusal is the error envelope, with the request id of `service.middleware` (which wraps this one).
"""

from __future__ import annotations

import secrets

from pydantic import SecretStr
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import ApiError, BodyTooLarge, error_response
from service.settings import Settings

ADMIN_PREFIX = "/admin/"


def admin_refusal(secret: SecretStr | None, authorization: str | None) -> ApiError | None:
    """403 when no admin token is configured (secure by default), 401 for a missing or wrong bearer token."""
    if secret is None:
        return ApiError(403, "the admin routes are disabled: set REASONREC_ADMIN_TOKEN to enable them")
    scheme, _, token = (authorization or "").partition(" ")
    expected = secret.get_secret_value().encode()
    if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip().encode(), expected):
        return ApiError(
            401, "missing or wrong admin token: send the header Authorization: Bearer <REASONREC_ADMIN_TOKEN>",
            param="Authorization", headers={"WWW-Authenticate": "Bearer"},
        )
    return None


def declared_length(headers: Headers) -> int | None:
    value = headers.get("content-length")
    return int(value) if value is not None and value.isdigit() else None


class RequestGuard:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.admin_token = settings.admin_token
        self.limits = {
            False: (settings.max_body_bytes, "REASONREC_MAX_BODY_BYTES"),
            True: (settings.max_admin_body_bytes, "REASONREC_MAX_ADMIN_BODY_BYTES"),
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        admin = scope["path"].startswith(ADMIN_PREFIX)
        refusal = admin_refusal(self.admin_token, headers.get("authorization")) if admin else None
        limit, setting = self.limits[admin]
        length = declared_length(headers)
        if refusal is None and length is not None and length > limit:
            refusal = ApiError(413, str(BodyTooLarge(limit, setting)) + f": this one says {length} bytes")
        if refusal is not None:
            await error_response(refusal.status, refusal.message, refusal.param, refusal.headers)(scope, receive, send)
            return
        if length is not None:  # the server reads no more than the declared length
            await self.app(scope, receive, send)
            return
        await self._counted(scope, receive, send, limit, setting)

    async def _counted(self, scope: Scope, receive: Receive, send: Send, limit: int, setting: str) -> None:
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit, setting)
            return message

        async def watching_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, watching_send)
        except BodyTooLarge as exc:  # raised outside a route (routes turn it into a 413 themselves: service.errors)
            if started:
                raise
            await error_response(413, str(exc))(scope, receive, send)
