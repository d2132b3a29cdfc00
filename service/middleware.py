"""The outermost layer of every request: request id, total time, the request histogram (by endpoint, ranker and
the status answered, so a 5xx rate can be alerted on), and the last-resort 500.

Response headers: `x-request-id` (the client's, echoed when it sent a sane one, else generated) and
`x-total-time` (milliseconds from the request's arrival to the start of the response, e.g. "12.345").
An exception no handler caught is logged with the request id and answered as a 500 in the error envelope.
A plain ASGI middleware (not `BaseHTTPMiddleware`), so the request id contextvar is visible to the routes.
"""

from __future__ import annotations

import logging
import time

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.context import REQUEST_ID_HEADER, choose_request_id, request_id_var
from service.errors import error_response
from service.metrics import Metrics

log = logging.getLogger(__name__)

TOTAL_TIME_HEADER = "x-total-time"


def endpoint_label(scope: Scope) -> str:
    route = scope.get("route")
    return getattr(route, "path", None) or "unmatched"


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        request_id = choose_request_id(Headers(scope=scope).get(REQUEST_ID_HEADER))
        token = request_id_var.set(request_id)
        started = False
        status = 500  # what the request counts as unless a response starts (an exception after it is still a 500)

        async def send_with_headers(message: Message) -> None:
            nonlocal started, status
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                headers = MutableHeaders(scope=message)
                headers[REQUEST_ID_HEADER] = request_id
                headers[TOTAL_TIME_HEADER] = f"{(time.perf_counter() - start) * 1000:.3f}"
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            log.exception("unhandled error serving %s %s (request %s)", scope["method"], scope["path"], request_id)
            status = 500
            if started:
                raise
            response = error_response(500, f"internal error; quote request id {request_id} when reporting it")
            await response(scope, receive, send_with_headers)
        finally:
            ranker = scope.get("state", {}).get("ranker", "")
            elapsed = time.perf_counter() - start
            self.metrics.request_duration.labels(endpoint_label(scope), ranker, str(status)).observe(elapsed)
            request_id_var.reset(token)
