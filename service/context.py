"""The request id of the request being served (a contextvar) and the logging that carries it.

`stamp_log_records` makes every log record carry `record.request_id` ("-" outside a request), whatever the
handlers; `LOG_CONFIG` is the uvicorn logging config `serve` uses, which prints it on every line.
"""

from __future__ import annotations

import logging
import re
import uuid
from contextvars import ContextVar
from typing import Any

REQUEST_ID_HEADER = "x-request-id"
_VALID_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")

request_id_var: ContextVar[str] = ContextVar("request_id", default="-")


def choose_request_id(sent: str | None) -> str:
    """The client's id when it is a sane token (echoed back), else a fresh one."""
    if sent is not None and _VALID_ID.fullmatch(sent):
        return sent
    return uuid.uuid4().hex


def stamp_log_records() -> None:
    """Wrap the log record factory (once per process) so each record gets the current request id."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "stamps_request_id", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        record.request_id = request_id_var.get()
        return record

    factory.stamps_request_id = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"

LOG_CONFIG: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"default": {"format": LOG_FORMAT}},
    "handlers": {
        "default": {
            "class": "logging.StreamHandler", "formatter": "default", "stream": "ext://sys.stderr",
        },
    },
    "root": {"handlers": ["default"], "level": "INFO"},
    "loggers": {
        "uvicorn": {"level": "INFO"},
        "uvicorn.error": {"level": "INFO"},
        "uvicorn.access": {"level": "INFO"},
    },
}
