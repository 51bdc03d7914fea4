"""``salesmart-serve``: serve one function as ``functions-framework`` does (same app, same
gunicorn, same ``WORKERS``/``THREADS``/``CLOUD_RUN_TIMEOUT_SECONDS``), plus read deadlines.

Why not the ``functions-framework`` command itself: its gunicorn ``gthread`` worker reads a
started request with a blocking socket and no deadline, so ``THREADS`` clients dripping one
header line a second pin every serving thread of the instance (gunicorn only bounds the wait
for the *first* byte). Here each request must arrive whole within
``SALESMART_HEADER_TIMEOUT_SECONDS`` (default 10) for its headers, and the rest of the
exchange (body, handler, response) within ``SALESMART_REQUEST_DEADLINE_SECONDS`` (default 60);
past either, the connection is shut down, which frees the thread at once. This bounds what one
slow client costs, not what many do: a request takes a thread from its first byte, so more
slow clients than threads still delay the rest (Knative's queue-proxy, in front of every pod,
passes a request on only once its headers are whole). A request gunicorn
itself refuses (unparsable, headers too large) is answered in the contract's JSON error envelope
with an ``X-Request-ID``, not gunicorn's HTML page quoting the request. The function code is
unchanged and ``functions-framework --source … --target …`` still serves it (without these
deadlines), as the contract says.
"""

from __future__ import annotations

import argparse
import contextlib
import http
import os
import queue
import secrets
import selectors
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import gunicorn.app.base
from gunicorn import util
from gunicorn.http import errors as parse_errors
from gunicorn.workers.base import Worker
from gunicorn.workers.gthread import ThreadWorker

from common import errors
from common.config import ConfigError, positive_seconds, serving_threads, whole_number
from common.http import JSON_DEFAULT_HEADERS, REQUEST_ID_HEADER, json_body
from common.logging import log_failure, log_request
from common.process import die_with_parent

DEFAULT_HEADER_TIMEOUT_SECONDS = 10.0
DEFAULT_REQUEST_DEADLINE_SECONDS = 60.0
#: Set by a local starter (`salesmart up`, `salesmart serve`) to its pid: the server stops
#: when that process dies, even killed outright. Unset in containers.
PARENT_PID_ENV = "SALESMART_PARENT_PID"
MAX_PORT = 65535
T = TypeVar("T")


def _count(
    env: Mapping[str, str], name: str, default: int, minimum: int = 1, maximum: int | None = None
) -> int:
    """A whole-number variable, ``default`` when unset; a bad one raises ``ConfigError``."""
    raw = env.get(name, "")
    return whole_number(raw, name, minimum=minimum, maximum=maximum) if raw else default


def _port(text: str) -> int:
    """``--port`` as the ``PORT`` rule reads it: a TCP port, else one line (not a traceback)."""
    return _checked(lambda: whole_number(text, "--port", minimum=1, maximum=MAX_PORT))


@dataclass(frozen=True)
class ServingVariables:
    """What a server reads from its environment besides the function's own settings."""

    workers: int
    threads: int
    timeout: int
    header_timeout: float
    request_deadline: float


def serving_variables(env: Mapping[str, str]) -> ServingVariables:
    """``WORKERS``, ``THREADS``, ``CLOUD_RUN_TIMEOUT_SECONDS`` (as functions-framework reads
    them) and the two deadlines; a bad one raises ``ConfigError``. ``up`` and ``serve`` read
    them before they start anything, as the servers they start will."""

    def seconds(name: str, default: float) -> float:
        raw = env.get(name, "")
        return positive_seconds(raw, name) if raw else default

    return ServingVariables(
        workers=_count(env, "WORKERS", 1),
        # As many as the PostgreSQL pool's connections (common.db.default_pool_size).
        threads=serving_threads(env),
        timeout=_count(env, "CLOUD_RUN_TIMEOUT_SECONDS", 0, minimum=0),
        header_timeout=seconds("SALESMART_HEADER_TIMEOUT_SECONDS", DEFAULT_HEADER_TIMEOUT_SECONDS),
        request_deadline=seconds(
            "SALESMART_REQUEST_DEADLINE_SECONDS", DEFAULT_REQUEST_DEADLINE_SECONDS
        ),
    )


def _checked(read: Callable[[], T]) -> T:
    """A server setting read by the config's own rules; a bad one ends the start in one line."""
    try:
        return read()
    except ConfigError as exc:
        raise SystemExit(f"salesmart-serve: {exc}") from None


# gunicorn's failures, most specific first (the response-header errors subclass the request
# ones), and what each is answered with; any other exception is an internal error.
_TRANSPORT_ERRORS: tuple[tuple[type[Exception], Callable[[], errors.ApiError]], ...] = (
    (parse_errors.InvalidResponseHeader, errors.InternalError),  # the application's header
    (parse_errors.InvalidResponseHeaderName, errors.InternalError),
    (parse_errors.ConfigurationProblem, errors.InternalError),
    (parse_errors.LimitRequestLine, errors.UriTooLong),
    (parse_errors.LimitRequestHeaders, errors.HeadersTooLarge),
    (parse_errors.ExpectationFailed, errors.ExpectationFailed),
    (parse_errors.UnsupportedTransferCoding, errors.TransferCodingNotImplemented),
    (parse_errors.ParseException, lambda: errors.BadRequest("The request is not valid HTTP/1.1.")),
)


def transport_error(exc: BaseException) -> errors.ApiError:
    """What to answer when gunicorn itself fails a request: one it could not parse, or a
    failure outside the application (the app answers its own errors)."""
    for kind, answer in _TRANSPORT_ERRORS:
        if isinstance(exc, kind):
            return answer()
    return errors.InternalError()


def transport_error_response(error: errors.ApiError, request_id: str) -> bytes:
    """The whole HTTP/1.1 answer, in the contract's envelope; the connection is closed after
    it, as gunicorn does (the stream may be out of step)."""
    body = json_body(error.body(request_id))
    headers = {
        "Connection": "close",
        "Content-Type": "application/json",
        "Content-Length": str(len(body)),
        REQUEST_ID_HEADER: request_id,
        **dict(JSON_DEFAULT_HEADERS),
        **error.headers,
    }
    head = f"HTTP/1.1 {error.status} {http.HTTPStatus(error.status).phrase}\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return (head + "\r\n").encode("latin-1") + body


class DeadlineThreadWorker(ThreadWorker):  # type: ignore[misc]  # gunicorn is untyped
    """gunicorn's ``gthread`` worker with a deadline on every request's exchange.

    One reaper thread per worker shuts down the socket of any connection past its deadline; a
    thread blocked reading it then sees end-of-file and gunicorn closes the connection. Arming
    and shutting down happen under one lock, so a connection handed back to the keep-alive
    poller is never shut down by a stale deadline.
    """

    header_timeout = DEFAULT_HEADER_TIMEOUT_SECONDS
    request_deadline = DEFAULT_REQUEST_DEADLINE_SECONDS
    function = ""  # the target's name, for log lines written outside the application

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadlines: dict[int, tuple[float, socket.socket]] = {}
        self._deadlines_lock = threading.Lock()

    def run(self) -> None:
        threading.Thread(target=self._reap, name="salesmart-read-deadline", daemon=True).start()
        self._lingering = Lingerer(closed=lambda: self.method_queue.defer(self._lingered))
        super().run()

    def _lingered(self) -> None:
        self.nr_conns -= 1

    def finish_request(self, conn: Any, fs: Any) -> None:
        # gunicorn closes a connection that ends with its answer gracefully (RFC 9112 9.6:
        # the write side shut, the rest of the client's data read for up to 2 s), on this,
        # the main loop's thread: a client that stayed silent held every other connection
        # of the worker for those 2 s. The lingering is done by a thread of its own.
        lingering = getattr(self, "_lingering", None)
        if lingering is not None and not getattr(conn, "lingers_apart", False):
            conn.lingers_apart = True  # once per connection, not per kept-alive request
            plain_close = conn.close

            def close(graceful: bool = False) -> None:
                if not graceful:
                    plain_close()
                elif lingering.close(conn.sock):
                    # Counted until closed (gunicorn has just uncounted it): its limit on
                    # connections keeps bounding open sockets, and a stopping worker
                    # waits for the lingering ones as for the others.
                    self.nr_conns += 1

            conn.close = close
        super().finish_request(conn, fs)

    def _arm(self, conn: Any, seconds: float) -> None:
        with self._deadlines_lock:
            self._deadlines[id(conn)] = (time.monotonic() + seconds, conn.sock)

    def _disarm(self, conn: Any) -> None:
        with self._deadlines_lock:
            self._deadlines.pop(id(conn), None)

    def _reap(self) -> None:
        while self.alive:
            now = time.monotonic()
            with self._deadlines_lock:
                late = [key for key, (deadline, _) in self._deadlines.items() if deadline <= now]
                for key in late:
                    _, sock = self._deadlines.pop(key)
                    with contextlib.suppress(OSError):  # already closed by the client
                        sock.shutdown(socket.SHUT_RDWR)
            if late:
                self.log.info("closed %d connection(s) past their read deadline", len(late))
            time.sleep(0.25)

    def handle_quit(self, sig: int, frame: Any) -> None:
        # Quick shutdown (SIGQUIT/SIGINT: Ctrl-C, or the master's quick stop) without gthread's
        # ``tpool.shutdown()``: a signal landing while this thread is inside ``tpool.submit``,
        # which holds the pool's lock, made that call wait for its own lock forever (CPython
        # #121649) and the worker outlived its master. Exiting is enough: the pool's exit hook
        # still ends its threads, as it did after that call.
        Worker.handle_quit(self, sig, frame)

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        # gunicorn's own answer is an HTML page quoting the offending request line or header;
        # this one is the JSON envelope every other answer uses, with a request id to quote.
        error = transport_error(exc)
        request_id = secrets.token_hex(16)
        if isinstance(error, errors.InternalError):
            log_failure("error outside the application", exc, request_id=request_id)
        log_request(
            function=self.function,
            request_id=request_id,
            method=str(getattr(req, "method", "") or ""),
            path=str(getattr(req, "path", "") or ""),
            status=error.status,
            duration_ms=0.0,
        )
        with contextlib.suppress(OSError):  # the client may be gone already
            util.write_nonblock(client, transport_error_response(error, request_id))

    def handle(self, conn: Any) -> Any:
        # From the moment a thread takes the connection until its headers are parsed.
        self._arm(conn, self.header_timeout)
        try:
            return super().handle(conn)
        finally:
            self._disarm(conn)

    def load_wsgi(self) -> None:
        super().load_wsgi()
        self.wsgi: Any = _closing_after_undrained_chunks(self.wsgi)

    def handle_request(self, req: Any, conn: Any) -> Any:
        # Headers are in: the body, the handler and the response share the longer deadline.
        self._arm(conn, self.request_deadline)
        if _longer_than_drained(req):
            # The functions read at most a small form: gunicorn drains only so much of the
            # rest before the next request, then drops the connection. The answer says so
            # (Connection: close) instead of promising a keep-alive that loses the next one.
            req.must_close = True
        # A chunked body's length is known only once read: the app's wrapper drains it
        # before the answer's headers go out, and closes after one that does not end.
        _serving.chunked = req if _is_chunked(req) else None
        try:
            return super().handle_request(req, conn)
        finally:
            _serving.chunked = None


#: What gunicorn reads past of a body the application left unread (its _DRAIN_MAX_BYTES).
DRAINED_BODY_BYTES = 64 * 1024
#: How long the rest of a chunked body may take to arrive before the answer goes out
#: without it (and closes the connection): a client that stalls its body is not waited on.
DRAIN_SECONDS = 2.0

#: The chunked request a serving thread is answering (else None).
_serving = threading.local()


def _longer_than_drained(req: Any) -> bool:
    """A body whose declared length gunicorn will not drain whole (it gives up on reaching
    the limit)."""
    length = next((str(value) for name, value in req.headers if name == "CONTENT-LENGTH"), "")
    return length.isdigit() and int(length) >= DRAINED_BODY_BYTES


def _is_chunked(req: Any) -> bool:
    return any(name == "TRANSFER-ENCODING" for name, _ in req.headers)


def _closing_after_undrained_chunks(app: Any) -> Any:
    """``app``, then what it left of a chunked body read (up to ``DRAINED_BODY_BYTES``
    within ``DRAIN_SECONDS``): a body longer or slower than that, or broken, marks the
    answer ``Connection: close``, instead of a keep-alive that gunicorn then drops with the
    next request on it. Closing after every chunked body would cost its clients a
    connection per request; a small one is read whole and the connection kept."""

    def serve(environ: dict[str, Any], start_response: Any) -> Any:
        answer = app(environ, start_response)
        req = getattr(_serving, "chunked", None)
        if req is not None:
            # gunicorn's own answer object: closing anyway (a stopping worker, the
            # keep-alive limit) needs no drain.
            response = getattr(start_response, "__self__", None)
            closing = req.should_close() or getattr(response, "must_close", False) is True
            if not closing and not _drained(environ["wsgi.input"], req.unreader):
                req.must_close = True
        return answer

    return serve


class _DeadlineSocket:
    """``sock`` for a body's reader, every ``recv`` within one deadline for them all: a
    timeout set per read would start again with each byte a client trickles."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock = sock
        self._deadline = deadline

    def recv(self, size: int) -> bytes:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the rest of the body did not come in time")
        self._sock.settimeout(left)
        return self._sock.recv(size)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def _drained(body: Any, unreader: Any) -> bool:
    """Whether the rest of ``body`` ended within ``DRAINED_BODY_BYTES`` and
    ``DRAIN_SECONDS`` (read and dropped). A broken chunk (met by the app's read or this
    one) or a client gone, stalled or trickling midway is not: where a next request
    starts is unknown."""
    if getattr(body, "failed", False) is True:
        return False
    sock = getattr(unreader, "sock", None)
    if not isinstance(sock, socket.socket):
        return False  # not a socket's reader as expected: close rather than guess
    prior = sock.gettimeout()
    unreader.sock = _DeadlineSocket(sock, time.monotonic() + DRAIN_SECONDS)
    left = DRAINED_BODY_BYTES + 1  # one byte past the limit says the body is longer
    try:
        while left > 0:
            data = body.read(min(8192, left))
            if not data:
                return getattr(body, "failed", False) is not True
            left -= len(data)
    except Exception:  # gunicorn's parse errors, the deadline, a reset socket
        return False
    finally:
        unreader.sock = sock
        with contextlib.suppress(OSError):
            sock.settimeout(prior)
    return False


class Lingerer:
    """Closes connections after their last answer as gunicorn's ``close_graceful`` does
    (RFC 9112 9.6: the write side shut at once, then what the client still sends read
    and dropped until it closes, ``LINGER_BYTES`` or ``LINGER_SECONDS``, so that unread
    data does not make the kernel reset the connection under the answer), on a thread
    of its own instead of the caller's. ``closed`` is called (on that thread) for each
    socket ``close`` handed over, once it is closed: the worker counts a lingering
    socket as a connection until then, so its limit on connections still bounds them."""

    LINGER_SECONDS = 2.0
    LINGER_BYTES = 64 * 1024

    def __init__(self, closed: Callable[[], None]) -> None:
        self._closed = closed
        self._arrivals: queue.SimpleQueue[tuple[socket.socket, int]] = queue.SimpleQueue()
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._wake_reader.setblocking(False)
        # Never blocks the caller: a full pair means a wake-up is pending already.
        self._wake_writer.setblocking(False)
        self._thread = threading.Thread(target=self._run, name="salesmart-linger", daemon=True)
        self._thread.start()

    def close(self, sock: socket.socket) -> bool:
        """Shut ``sock``'s write side; True when it was handed over to linger, False when
        it is closed already (the client had closed its side, or the socket is gone)."""
        try:
            sock.shutdown(socket.SHUT_WR)
            sock.setblocking(False)
            already_read = _read_to_end_now(sock, self.LINGER_BYTES)
            if already_read is None or already_read >= self.LINGER_BYTES:
                sock.close()  # the client is gone, or has sent all that is read for it
                return False
        except OSError:  # already gone: nothing to linger for
            with contextlib.suppress(OSError):
                sock.close()
            return False
        if not self._thread.is_alive():  # it never should die; if it did, close as before
            util.close_graceful(sock)
            return False
        self._arrivals.put((sock, already_read))
        with contextlib.suppress(OSError):
            self._wake_writer.send(b"\0")
        return True

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self._wake_reader, selectors.EVENT_READ)
        lingering: dict[socket.socket, list[float]] = {}  # sock: [deadline, bytes read]

        def done(sock: socket.socket) -> None:
            if lingering.pop(sock, None) is None:
                return  # closed already: counted back once only
            with contextlib.suppress(KeyError, ValueError, OSError):
                selector.unregister(sock)
            with contextlib.suppress(OSError):
                sock.close()
            try:
                self._closed()
            except Exception as exc:
                failures.append(exc)

        # Every step on a socket is guarded on its own: a failure (a bug; none is known)
        # drops the socket it concerns and leaves the others to go on, so no socket is
        # left open and counted for good. Failures are logged once per pass, which then
        # waits a moment: one that comes back is not logged in a spin.
        failures: list[Exception] = []
        while True:
            try:
                ready = selector.select(timeout=0.25)
            except Exception as exc:
                failures.append(exc)
                ready = []
            for key, _ in ready:
                if key.fileobj is self._wake_reader:
                    with contextlib.suppress(OSError):
                        self._wake_reader.recv(4096)
                    continue
                sock = key.fileobj
                try:
                    assert isinstance(sock, socket.socket)
                    self._read(sock, lingering, done)
                except Exception as exc:
                    failures.append(exc)
                    done(sock)  # type: ignore[arg-type]
            while True:
                try:
                    sock, already_read = self._arrivals.get_nowait()
                except queue.Empty:
                    break
                lingering[sock] = [time.monotonic() + self.LINGER_SECONDS, already_read]
                try:
                    selector.register(sock, selectors.EVENT_READ)
                except (KeyError, ValueError, OSError):  # closed meanwhile
                    done(sock)
                except Exception as exc:  # a bug
                    failures.append(exc)
                    done(sock)
            now = time.monotonic()
            for sock in [sock for sock, (deadline, _) in lingering.items() if deadline <= now]:
                done(sock)  # guarded within
            if failures:
                message = f"lingering on closed connections ({len(failures)} failed)"
                log_failure(message, failures[0])
                failures.clear()
                time.sleep(0.25)

    def _read(
        self,
        sock: socket.socket,
        lingering: dict[socket.socket, list[float]],
        done: Callable[[socket.socket], None],
    ) -> None:
        """What the client sent since, dropped; the socket closed at its end or the cap."""
        try:
            data = sock.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            done(sock)
            return
        lingering[sock][1] += len(data)
        if lingering[sock][1] >= self.LINGER_BYTES:
            done(sock)


def _read_to_end_now(sock: socket.socket, limit: int) -> int | None:
    """None when the client has closed its side already (what it sent before, up to
    ``limit``, read and dropped): nothing to linger for. Else the bytes read so far."""
    read = 0
    while read < limit:
        try:
            data = sock.recv(4096)
        except BlockingIOError:
            return read
        if not data:
            return None
        read += len(data)
    return read


REQUEST_LINE_LIMIT = 8190


def gunicorn_options(env: Mapping[str, str], host: str, port: int) -> dict[str, Any]:
    """The options functions-framework 3.x gives gunicorn, read from the same variables
    (a bad one ends the start in one line), with the deadline worker."""
    variables = _checked(lambda: serving_variables(env))
    return {
        "bind": f"{host}:{port}",
        "workers": variables.workers,
        "threads": variables.threads,
        "timeout": variables.timeout,
        "loglevel": env.get("GUNICORN_LOG_LEVEL", "error"),
        # functions-framework passes 0 (no limit): a thread would then buffer a request
        # line of megabytes. The functions' longest real URL is a few hundred bytes;
        # 8190 is gunicorn's largest finite limit, and past it the client gets 414.
        "limit_request_line": REQUEST_LINE_LIMIT,
        "worker_class": f"{__name__}.DeadlineThreadWorker",
        "worker_tmp_dir": worker_tmp_dir(),
        # gunicorn opens a management socket at ~/.gunicorn/gunicorn.ctl (worker
        # counts, shutdown): nothing here uses it, the local run's four functions would
        # share one path, and a read-only root has no home to write it in.
        "control_socket_disable": True,
    }


class FunctionServer(gunicorn.app.base.BaseApplication):  # type: ignore[misc]
    """gunicorn serving one function's app with ``gunicorn_options``."""

    def __init__(self, app: Any, options: dict[str, Any]) -> None:
        self.application = app
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        return self.application


def worker_tmp_dir(shm: str = "/dev/shm") -> str | None:  # noqa: S108  # nosec B108 - a tmpfs of its own, not a shared temp file
    """Where gunicorn keeps its workers' heartbeat files: the memory filesystem when there
    is one (as gunicorn advises in containers), so a read-only root filesystem without a
    writable /tmp still serves; else gunicorn's default (the system's temporary folder)."""
    return shm if Path(shm).is_dir() and os.access(shm, os.W_OK) else None


def launcher() -> list[str]:
    """``salesmart-serve`` of this environment (``python -m common.server`` without it)."""
    script = Path(sys.executable).parent / "salesmart-serve"
    return [str(script)] if script.exists() else [sys.executable, "-m", __name__]


def command(
    target: str, source: Path | str, host: str = "127.0.0.1", port: int | str = 8080
) -> list[str]:
    """The argv that serves ``target`` from ``source`` (used by the stack and tests)."""
    return [*launcher(), *serve_arguments(target, source, host, port)]


def serve_arguments(target: str, source: Path | str, host: str, port: int | str) -> list[str]:
    """The options, shared with the ``functions-framework`` command."""
    return [
        "--source",
        str(source),
        "--target",
        target,
        "--host",
        host,
        "--port",
        str(port),
    ]


def _parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="salesmart-serve",
        description="Serve one function (functions-framework + deadlines).",
        allow_abbrev=False,  # whole option names only, as the salesmart command
    )
    parser.add_argument(
        "--target",
        default=env.get("FUNCTION_TARGET"),
        metavar="NAME",
        help="the function to serve: token, trends_bq, trends_pg or dashboard"
        " (default: FUNCTION_TARGET)",
    )
    parser.add_argument(
        "--source",
        default=env.get("FUNCTION_SOURCE"),
        metavar="FILE",
        help="its main.py (default: FUNCTION_SOURCE, else functions/NAME/main.py)",
    )
    # In a container the function must listen on all interfaces (Knative routes to the pod).
    all_interfaces = "0.0.0.0"  # noqa: S104  # nosec B104 - the container's listen address
    parser.add_argument(
        "--host",
        default=env.get("HOST", all_interfaces),
        help="the address to listen on (default: HOST, else 0.0.0.0, every interface, as in"
        " a container; 127.0.0.1 keeps a local run on loopback)",
    )
    parser.add_argument(
        "--port",
        type=_port,
        default=_checked(lambda: _count(env, "PORT", 8080, maximum=MAX_PORT)),
        help="the port, 1-65535 (default: PORT, else 8080)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    env = os.environ
    args = _parser(env).parse_args(argv)
    if not args.target:
        print("salesmart-serve: set --target or FUNCTION_TARGET", file=sys.stderr)
        return 2
    source = args.source or f"functions/{args.target}/main.py"
    if not Path(source).is_file():
        print(f"salesmart-serve: no function source at {source}", file=sys.stderr)
        return 2
    variables = _checked(lambda: serving_variables(env))
    DeadlineThreadWorker.header_timeout = variables.header_timeout
    DeadlineThreadWorker.request_deadline = variables.request_deadline
    DeadlineThreadWorker.function = args.target
    options = gunicorn_options(env, args.host, args.port)
    parent = env.get(PARENT_PID_ENV, "")
    if parent.isdigit():  # started by `salesmart up`/`serve`: stop when it is killed
        die_with_parent(int(parent), signal.SIGTERM)
    from functions_framework import create_app  # the framework's own loader and routing

    # A setting the function refuses ends the process here (``start_function``: exit 78).
    app = create_app(args.target, source)  # type: ignore[no-untyped-call]
    FunctionServer(app, options).run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
