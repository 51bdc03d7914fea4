"""Structured JSON logs: one line per request (and per notable event) on stdout.

Fields: ``time``, ``severity`` (Cloud Logging's name), ``message``, then context such as
``function``, ``request_id``, ``user``, ``method``, ``path``, ``status``, ``rows`` and
``duration_ms``. Lines logged while a function answers a request (a PostgreSQL reconnect,
a BigQuery failure, a library's warning) carry its ``function`` and ``request_id``.
Secrets never enter a record: callers pass only the fields above, and
any field whose name looks like a credential is dropped here as a second line of defence.
Query strings, headers, bodies, tokens, passwords and transaction ids are never logged.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

_FORBIDDEN = ("password", "secret", "token", "authorization", "cookie", "key", "dsn")
# One write per line under a lock, straight to stdout: a line per request through the
# logging module's record, handler and formatter cost ~80 us; this ~25 us.
_write_lock = threading.Lock()
# The request a serving thread is answering (``function``, ``request_id``), so that events
# logged deep inside a call (a PostgreSQL reconnect, a BigQuery failure, a library's
# warning) say which request they belong to.
_request_fields: ContextVar[dict[str, Any] | None] = ContextVar("request_fields", default=None)


@contextlib.contextmanager
def request_context(**fields: Any) -> Iterator[None]:
    """Every line logged inside the block carries ``fields`` (unless it gives its own)."""
    token = _request_fields.set(fields)
    try:
        yield
    finally:
        _request_fields.reset(token)


def json_line(message: str, level: int, fields: dict[str, Any], created: float) -> str:
    """The record as one JSON line (credential-like field names dropped, ``None`` left out)."""
    entry: dict[str, Any] = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
        + f".{int(created * 1000) % 1000:03d}Z",
        "severity": logging.getLevelName(level),
        "message": message,
    }
    for name, value in fields.items():
        if value is not None and _loggable(name):
            entry[name] = value
    line = json.dumps(entry, default=str, ensure_ascii=False)
    if not line.isascii():  # rare: non-ASCII text in a field
        # A lone surrogate cannot be written as UTF-8 (the write failed, and with it the
        # request); U+2028/U+2029 end a line for some readers. Escaped, like any control.
        line = line.encode("utf-8", "backslashreplace").decode("utf-8")
        line = line.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return line + "\n"


@functools.lru_cache(maxsize=512)
def _loggable(name: str) -> bool:
    """False for a field name that looks like a credential (names are few and fixed)."""
    lowered = name.lower()
    return not any(word in lowered for word in _FORBIDDEN)


def log_event(message: str, *, level: int = logging.INFO, **fields: Any) -> None:
    context = _request_fields.get()
    if context is not None:
        fields = {**context, **{k: v for k, v in fields.items() if v is not None}}
    line = json_line(message, level, fields, time.time())
    with _write_lock:
        stream = sys.stdout  # looked up each time: tests and servers may swap it
        stream.write(line)
        stream.flush()


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
    """The SQLSTATE of a PostgreSQL error (psycopg2's ``pgcode``); None for any other."""
    code = getattr(exc, "pgcode", None)
    return code if isinstance(code, str) and code else None


class JsonLogHandler(logging.Handler):
    """Records of Python's ``logging`` (libraries: urllib3, google-auth, ...) as the same
    JSON lines. Without it a library's warning reaches stderr through
    ``logging.lastResort`` as plain text: no severity for Cloud Logging, no ``logger``."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            error = record.exc_info[1] if record.exc_info else None
            log_event(
                record.getMessage(),
                level=record.levelno,
                logger=record.name,
                error_type=type(error).__name__ if error is not None else None,
            )
        except Exception:
            self.handleError(record)


def route_library_logs(level: int = logging.WARNING) -> None:
    """Once per process (idempotent): ``level`` and above from any logger become JSON lines."""
    root = logging.getLogger()
    if not any(isinstance(handler, JsonLogHandler) for handler in root.handlers):
        root.addHandler(JsonLogHandler(level))
