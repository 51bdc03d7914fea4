"""Structured JSON logs: one line per request (and per notable event) on stdout.

Fields: ``time``, ``severity`` (Cloud Logging's name), ``message``, then context such as
``function``, ``request_id``, ``user``, ``method``, ``path``, ``status``, ``rows`` and
``duration_ms``. Secrets never enter a record: callers pass only the fields above, and
any field whose name looks like a credential is dropped here as a second line of defence.
Query strings, headers, bodies, tokens, passwords and transaction ids are never logged.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import traceback
from typing import Any

LOGGER_NAME = "salesmart"
_FORBIDDEN = ("password", "secret", "token", "authorization", "cookie", "key", "dsn")
_configured = False


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "severity": record.levelname,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            for name, value in fields.items():
                if value is not None and not any(word in name.lower() for word in _FORBIDDEN):
                    entry[name] = value
        return json.dumps(entry, default=str, ensure_ascii=False)


def get_logger() -> logging.Logger:
    """The process-wide JSON logger (configured once, independent of the root logger)."""
    global _configured
    logger = logging.getLogger(LOGGER_NAME)
    if not _configured:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(JsonFormatter())
        logger.handlers[:] = [handler]
        logger.setLevel(logging.INFO)
        logger.propagate = False
        _configured = True
    return logger


def log_event(message: str, *, level: int = logging.INFO, **fields: Any) -> None:
    get_logger().log(level, message, extra={"fields": fields})


def log_request(
    *,
    function: str,
    request_id: str,
    method: str,
    path: str,
    status: int,
    duration_ms: float,
    user: str | None = None,
    rows: int | None = None,
) -> None:
    level = logging.ERROR if status >= 500 else logging.INFO
    log_event(
        "request",
        level=level,
        function=function,
        request_id=request_id,
        method=method,
        path=path,
        status=status,
        user=user,
        rows=rows,
        duration_ms=round(duration_ms, 2),
    )


def log_failure(message: str, exc: BaseException, **fields: Any) -> None:
    """An unexpected error, for operators: its type, its PostgreSQL code, where it happened.

    The exception text is left out: driver messages can quote parameter values.
    """
    frames = traceback.extract_tb(exc.__traceback__)
    where = [f"{frame.filename}:{frame.lineno} in {frame.name}" for frame in frames[-5:]]
    log_event(
        message,
        level=logging.ERROR,
        error_type=f"{type(exc).__module__}.{type(exc).__qualname__}",
        sqlstate=sqlstate(exc),
        stack=where,
        **fields,
    )


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a pg8000 ``DatabaseError`` (its first argument is the error fields)."""
    if exc.args and isinstance(exc.args[0], dict):
        code = exc.args[0].get("C")
        return str(code) if code else None
    return None
