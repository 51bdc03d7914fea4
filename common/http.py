"""The HTTP skeleton every function shares: routing, request ids, errors, headers, logs.

A ``FunctionApp`` is a tiny router called with the Flask request that functions-framework
passes to the target function. For every request it

- takes a sane incoming ``X-Request-ID`` or makes one, and returns it on every response;
- answers ``GET /healthz`` (no auth, no warehouse) and ``GET /openapi.json``;
- answers an unknown path with 404, a known path with another method (``OPTIONS`` too)
  with 405 + ``Allow`` (``HEAD`` is served like ``GET``);
- turns ``ApiError`` into the JSON envelope, a body that cannot be read (broken framing,
  too large) into a 4xx, and anything else into a generic 500;
- adds security headers (a CSP without external sources, nosniff, no framing, ...);
- writes one JSON log line: function, user, status, rows, duration (and libraries' warnings
  become JSON lines too).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import flask
from flask import Request, Response
from werkzeug.datastructures import MultiDict

from common.errors import (
    ApiError,
    BadRequest,
    InternalError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    PreconditionFailed,
)
from common.logging import log_failure, log_request, request_context, route_library_logs

REQUEST_ID_HEADER = "X-Request-ID"
# RFC 9112 3.2 / RFC 3986 3.2.2: host (a reg-name, IPv4 or [IP-literal]) and optional port.
_HOST = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~!$&'()*+,;=%-]*)(:[0-9]*)?")
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@+=/-]{0,127}")
JSON_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
}
HSTS = "max-age=31536000; includeSubDomains"
#: Headers of every JSON answer (HSTS is added where the transport is secure).
JSON_DEFAULT_HEADERS = (
    *SECURITY_HEADERS.items(),
    ("Content-Security-Policy", JSON_CSP),
    ("Cache-Control", "no-store"),
)


@dataclass
class Call:
    """One request as handlers see it; handlers fill ``user`` and ``rows`` for the log."""

    request: Request
    request_id: str
    function: str
    user: str | None = None
    rows: int | None = None
    #: The request's form once read (``common.forms.read_form``).
    form: MultiDict[str, str] | None = None


Handler = Callable[[Call], Response]
ErrorRenderer = Callable[[Call, ApiError], Response]


def request_id_for(request: Request) -> str:
    given = request.headers.get(REQUEST_ID_HEADER, "")
    if _SANE_REQUEST_ID.fullmatch(given):
        return given
    return secrets.token_hex(16)


def unreadable_request_error(exc: BaseException) -> ApiError | None:
    """The client's error behind an exception raised while its body was read, if it is one.

    The server reads the body lazily, inside the handler: gunicorn raises its parse errors
    there (broken chunked framing, a body cut short), werkzeug its 4xx (a form over its
    memory limit). Those are bad requests, not failures of the function. gunicorn is looked
    up, not imported: under another server its errors cannot occur.
    """
    gunicorn_errors = sys.modules.get("gunicorn.http.errors")
    if gunicorn_errors is not None and isinstance(
        exc, (gunicorn_errors.ParseException, gunicorn_errors.NoMoreData)
    ):
        return BadRequest("The request body could not be read: its framing is broken.")
    from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

    if isinstance(exc, RequestEntityTooLarge):
        return PayloadTooLarge()
    if isinstance(exc, HTTPException) and 400 <= (exc.code or 0) < 500:
        return BadRequest("The request body could not be read.")
    return None


def _leave_body_unread(request: Request) -> None:
    """Once the function has answered, functions-framework reads what is left of the body
    into memory (its ``read_request`` hook), outside the function: a broken chunked body
    became an HTML 500 without X-Request-ID, and a 400 MB body took 400 MB of the worker
    (and the pod, over its memory limit). gunicorn discards an unread body by itself, 8 KiB
    at a time, before it reads the connection's next request; the hook is left nothing."""
    request.stream = io.BytesIO()  # werkzeug's cached property takes an assignment


def json_body(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def json_response(payload: Any, status: int = 200) -> Response:
    return Response(json_body(payload), status=status, mimetype="application/json")


def error_json(call: Call, error: ApiError) -> Response:
    response = json_response(error.body(call.request_id), error.status)
    for name, value in error.headers.items():
        response.headers[name] = value
    return response


def cacheable_body(call: Call, body: bytes) -> Response:
    """200 with a strong ``ETag`` over the JSON ``body``, or 304 when ``If-None-Match`` matches.

    ``Cache-Control: private``, as the contract says: only the caller's own cache may keep
    it. No freshness lifetime is given (no ``max-age``, no ``Last-Modified`` to guess one
    from), so a cache revalidates it with the ``ETag`` each time (cheap: a 304 has no body).
    """
    tag = hashlib.sha256(body).hexdigest()[:32]
    # RFC 9110 13.2.2: If-Match first (strong comparison; * is any current answer).
    required = call.request.if_match
    if required and not required.contains(tag):
        raise PreconditionFailed()
    conditional = call.request.if_none_match
    if conditional and conditional.contains_weak(tag):
        response = Response(status=304)
    else:
        response = Response(body, status=200, mimetype="application/json")
    response.set_etag(tag)
    response.headers["Cache-Control"] = "private"
    response.headers["Vary"] = "Authorization, Cookie"
    return response


def _require_host(request: Request) -> None:
    """RFC 9112 3.2: an HTTP/1.1 request without a Host, or with one that is not a host name
    (two are refused by the server itself), is answered 400. An empty one is allowed."""
    host = request.environ.get("HTTP_HOST")
    if host is None:
        if request.environ.get("SERVER_PROTOCOL") not in ("HTTP/1.0", "HTTP/0.9"):
            raise BadRequest("The request has no Host header.")
    elif not _HOST.fullmatch(host) or not _idna_name(host):
        raise BadRequest("The Host header is not a host name.")


def _idna_name(host: str) -> bool:
    """Whether the routing (werkzeug's ``bind_to_environ``) can take the name: it encodes
    it as IDNA, which refuses empty labels (``a..b``) and labels over 63 characters."""
    name = host if host.startswith("[") else host.partition(":")[0]
    try:
        name.encode("idna")
    except UnicodeError:
        return False
    return True


class _EmptyPathIsRoot:
    """WSGI: an empty path (``GET http://x``, RFC 9112 3.2.2) is ``/``."""

    def __init__(self, app: Callable[..., Any]) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if not environ.get("PATH_INFO"):
            environ["PATH_INFO"] = "/"
        return self.app(environ, start_response)


class FunctionApp:
    def __init__(
        self,
        name: str,
        *,
        secure_transport: bool,
        openapi: Callable[[], dict[str, Any]],
        error_renderer: ErrorRenderer = error_json,
    ) -> None:
        self.name = name
        self.secure_transport = secure_transport
        self.error_renderer = error_renderer
        self._openapi = openapi
        self._openapi_body: bytes | None = None
        self.routes: dict[str, dict[str, Handler]] = {}
        self._defaults = [
            *JSON_DEFAULT_HEADERS,
            *([("Strict-Transport-Security", HSTS)] if secure_transport else []),
        ]
        self.route("/healthz", GET=self._healthz)
        self.route("/openapi.json", GET=self._openapi_json)
        route_library_logs()

    def route(self, path: str, **handlers: Handler) -> None:
        self.routes[path] = {method.upper(): handler for method, handler in handlers.items()}

    # -- built-in routes ----------------------------------------------------------------------
    def _healthz(self, call: Call) -> Response:
        return json_response({"status": "ok", "function": self.name})

    def _openapi_json(self, call: Call) -> Response:
        if self._openapi_body is None:
            self._openapi_body = json_body(self._openapi())
        response = Response(self._openapi_body, mimetype="application/json")
        response.headers["Cache-Control"] = "public, max-age=300"
        return response

    # -- dispatch -------------------------------------------------------------------------------
    def _dispatch(self, call: Call) -> Response:
        _require_host(call.request)
        handlers = self.routes.get(call.request.path)
        if handlers is None:
            raise NotFound()
        method = call.request.method
        handler = handlers.get("GET" if method == "HEAD" else method)
        if handler is None:
            # OPTIONS too: the contract's "405 on other methods" (no CORS is offered).
            raise MethodNotAllowed(sorted({*handlers, *(["HEAD"] if "GET" in handlers else [])}))
        return handler(call)

    def __call__(self, request: Request) -> Response:
        started = time.perf_counter()
        call = Call(request=request, request_id=request_id_for(request), function=self.name)
        with request_context(function=self.name, request_id=call.request_id):
            try:
                response = self._dispatch(call)
            except ApiError as error:
                response = self._render_error(call, error)
            except Exception as exc:
                client_error = unreadable_request_error(exc)
                if client_error is None:
                    log_failure("unhandled error", exc)
                response = self._render_error(call, client_error or InternalError())
        self._finish(call, response)
        _leave_body_unread(request)
        log_request(
            function=self.name,
            request_id=call.request_id,
            method=request.method,
            path=request.path,
            status=response.status_code,
            duration_ms=(time.perf_counter() - started) * 1000,
            user=call.user,
            rows=call.rows,
        )
        return response

    def _render_error(self, call: Call, error: ApiError) -> Response:
        try:
            return self.error_renderer(call, error)
        except Exception as exc:  # a broken HTML error page must not hide the error
            log_failure("error renderer failed", exc, function=self.name)
            return error_json(call, error)

    def _finish(self, call: Call, response: Response) -> None:
        headers = response.headers
        present = {name.lower() for name in headers.keys()}  # noqa: SIM118 - Headers, not dict
        headers[REQUEST_ID_HEADER] = call.request_id
        for name, value in self._defaults:
            if name.lower() not in present:
                headers.add(name, value)

    def install(self) -> None:
        """Route functions-framework's own 404s (``/robots.txt``, ``/favicon.ico``) here too,
        and the routing's own answers: a Host it cannot encode (Flask's HTML 400, without
        X-Request-ID) and an absolute-form target without a path (``GET http://x``: a 308
        to the client's Host). The app answers them: a JSON 400, or the path ``/``.

        Called at import: functions-framework imports the source inside its app context.
        """
        if flask.has_app_context():
            from werkzeug.exceptions import BadHost

            app = flask.current_app
            for caught in (404, BadHost):
                app.register_error_handler(caught, lambda _error: self(flask.request))
            # A routing redirect is no error Flask lets a handler see: the path is mended
            # before the routing reads it.
            if not isinstance(app.wsgi_app, _EmptyPathIsRoot):
                app.wsgi_app = _EmptyPathIsRoot(app.wsgi_app)  # type: ignore[method-assign]
