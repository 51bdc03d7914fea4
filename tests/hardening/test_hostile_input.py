"""Hostile input: oversized bodies, headers and URLs, slow clients, odd query values, and
CSV files that push the reader (1 MB fields, NUL bytes, mixed line ends, a BOM), end to end
through the ``salesmart`` command into real PostgreSQL; ingestion killed at random points.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from common.config import Settings
from common.pg import connect
from common.validation import kept_raw_text
from pipeline.generate import generate
from pipeline.ingest import ingest_postgres
from pipeline.postgres_embedded import EmbeddedPostgres
from tests.conftest import cli_env, create_database
from tests.functions.conftest import Served, make_user

Serve = Callable[..., Served]
LEAKS = ("Traceback", 'File "', "SELECT", "pg8000", "psycopg", "Werkzeug", "127.0.0.1:5")


@pytest.fixture(scope="module")
def fns(serve: Serve, marts_dsn: str) -> dict[str, Served]:
    env = {"SALESMART_DATABASE_URL": marts_dsn, "THREADS": "4"}
    return {name: serve(name, **env) for name in ("token", "trends_pg", "dashboard")}


@pytest.fixture(scope="module")
def bearer(fns: dict[str, Served], marts_dsn: str) -> dict[str, str]:
    user = make_user(marts_dsn, "analyst")
    answer = requests.post(
        f"{fns['token'].url}/token",
        data={"username": user.username, "password": user.password},
        timeout=10,
    )
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


def no_leak(response: requests.Response) -> None:
    for leak in LEAKS:
        assert leak not in response.text, (leak, response.text[:500])


def envelope(response: requests.Response) -> dict[str, Any]:
    """The contract's error body, with the same request id in the header."""
    assert response.headers["Content-Type"].startswith("application/json"), response.text[:300]
    body: dict[str, Any] = response.json()
    assert {"error", "message", "request_id"} <= body.keys(), body
    assert response.headers["X-Request-ID"] == body["request_id"]
    return body


def timed(send: Callable[[], requests.Response]) -> tuple[requests.Response, float]:
    started = time.monotonic()
    response = send()
    return response, time.monotonic() - started


def test_oversized_bodies_headers_and_urls(fns: dict[str, Served], bearer: dict[str, str]) -> None:
    token_url = f"{fns['token'].url}/token"
    trends_url = f"{fns['trends_pg'].url}/sales/pg-trends"
    cases: list[tuple[str, Callable[[], requests.Response], set[int]]] = [
        (
            "5 MB form",
            lambda: requests.post(
                token_url,
                data=b"username=a&password=" + b"x" * 5_000_000,
                headers={"Content-Type": "application/x-www-form-urlencoded"},
                timeout=30,
            ),
            {400, 413},
        ),
        (
            "3 MB multipart",
            lambda: requests.post(
                token_url, files={"username": ("a", b"x" * 3_000_000)}, timeout=30
            ),
            {400, 413},
        ),
        (
            "20 MB octet stream",
            lambda: requests.post(
                token_url,
                data=b"x" * 20_000_000,
                headers={"Content-Type": "application/octet-stream"},
                timeout=30,
            ),
            {400, 413, 415},
        ),
        (
            # Chunked: no Content-Length to refuse it by, so the form parser's limit decides.
            "1 MB chunked form",
            lambda: requests.post(
                token_url,
                data=iter([b"username=a&password=", *[b"x" * 100_000] * 10]),
                headers={"Content-Type": "application/x-www-form-urlencoded"},
                timeout=30,
            ),
            {400, 413},
        ),
        (
            "100 kB header",
            lambda: requests.get(
                trends_url, headers={**bearer, "X-Big": "a" * 100_000}, timeout=30
            ),
            {400, 431},
        ),
        (
            "300 headers",
            lambda: requests.get(
                trends_url, headers={**bearer, **{f"X-H{i}": "a" for i in range(300)}}, timeout=30
            ),
            {400, 431},
        ),
        (
            "100 kB bearer token",
            lambda: requests.get(
                trends_url, headers={"Authorization": "Bearer " + "a" * 8000}, timeout=30
            ),
            {400, 401, 431},
        ),
        (
            "1 MB query string",
            lambda: requests.get(f"{trends_url}?{'x=1&' * 250_000}", headers=bearer, timeout=30),
            {414},
        ),
        (
            "1 MB form on the login page",
            lambda: requests.post(
                f"{fns['dashboard'].url}/login",
                data={"username": "a" * 1_000_000, "password": "b", "csrf_token": "c"},
                timeout=30,
            ),
            {400, 413},
        ),
    ]
    for label, send, allowed in cases:
        response, seconds = timed(send)
        print(f"{label}: {response.status_code} in {seconds:.2f} s")
        assert response.status_code in allowed, (label, response.status_code, response.text[:300])
        assert seconds < 10, label
        no_leak(response)
        if response.status_code != 401:
            envelope(response)  # also when gunicorn, not the function, refused it
    # Still serving.
    assert requests.get(trends_url, headers=bearer, timeout=10).status_code == 200


def raw_exchange(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send bytes no HTTP client library would, and read the whole answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):  # the server closes after an unparsable request
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines)
    return int(status_line.split()[1]), headers, body


UNPARSABLE_REQUESTS = [
    (b"MARKER-garbage\r\n\r\n", 400),
    (b"GET /sales/pg-trends?q=\xd9\xa3MARKER HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    (b"GET / HTTP/7.MARKER\r\nHost: x\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: x\r\nBad Header MARKER: 1\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"MARKER" * 2000 + b"\r\n\r\n", 431),
    (b"POST /token HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: MARKER\r\n\r\n", 501),
    (b"POST /token HTTP/1.1\r\nHost: x\r\nExpect: MARKER\r\nContent-Length: 1\r\n\r\nx", 417),
    # A request line past 8190 bytes is refused before a thread buffers it whole.
    (b"GET /sales/pg-trends?x=" + b"MARKER" * 1400 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
]


def test_a_long_request_line_within_the_limit_reaches_the_function(
    fns: dict[str, Served], bearer: dict[str, str]
) -> None:
    """The request-line cap leaves room for any URL the functions take: ~8,000 bytes still
    get the function's own answer (422 for a prefix that breaks its rule), not 414."""
    url = f"{fns['trends_pg'].url}/sales/pg-trends?product_prefix={'a' * 8000}"
    response = requests.get(url, headers=bearer, timeout=10)
    assert response.status_code == 422, response.text[:300]
    assert "product_prefix" in envelope(response)["details"]


@pytest.mark.parametrize(("request_bytes", "status"), UNPARSABLE_REQUESTS)
def test_requests_the_server_cannot_parse_get_the_json_envelope(
    fns: dict[str, Served], request_bytes: bytes, status: int
) -> None:
    """gunicorn refuses these before the function sees them; the answer is still the
    contract's (JSON, a request id), and quotes nothing of what was sent."""
    port = urlsplit(fns["trends_pg"].url).port
    assert port is not None
    got, headers, body = raw_exchange(port, request_bytes)
    assert got == status, body[:300]
    assert headers["Content-Type"] == "application/json"
    answer = json.loads(body)
    assert answer["request_id"] == headers["X-Request-ID"]
    assert answer["error"] and answer["message"]
    assert b"MARKER" not in body
    assert headers["X-Content-Type-Options"] == "nosniff"
    # One line in the function's log says what was refused.
    logged = [
        json.loads(line)
        for line in fns["trends_pg"].output().splitlines()
        if answer["request_id"] in line
    ]
    assert [entry["status"] for entry in logged] == [status]


@pytest.mark.parametrize(
    ("request_bytes", "status", "message"),
    [
        (b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n", 400, "no Host header"),
        (
            b"GET /healthz HTTP/1.1\r\nHost: a b/c@d\r\nConnection: close\r\n\r\n",
            400,
            "not a host name",
        ),
        (b"GET /healthz HTTP/1.0\r\n\r\n", 200, None),  # HTTP/1.0 has no Host to require
        (b"GET /healthz HTTP/1.2\r\nConnection: close\r\n\r\n", 400, "no Host header"),
        (b"GET /healthz HTTP/1.1\r\nHost:\r\nConnection: close\r\n\r\n", 200, None),  # empty
        (b"GET /healthz HTTP/1.1\r\nHost: [::1]:80\r\nConnection: close\r\n\r\n", 200, None),
        (b"GET /healthz HTTP/1.1\r\nHost: fn.example\r\nConnection: close\r\n\r\n", 200, None),
        # Names the routing cannot encode: they were Flask's HTML 400, without X-Request-ID.
        (b"GET /healthz HTTP/1.1\r\nHost: a..b\r\nConnection: close\r\n\r\n", 400, "not a"),
        (b"GET /healthz HTTP/1.1\r\nHost: .:80\r\nConnection: close\r\n\r\n", 400, "not a"),
        (
            b"GET /healthz HTTP/1.1\r\nHost: "
            + b"a" * 64
            + b".example\r\nConnection: close\r\n\r\n",
            400,
            "not a host name",
        ),
        (
            b"GET /healthz HTTP/1.1\r\nHost: " + b"a" * 63 + b"\r\nConnection: close\r\n\r\n",
            200,
            None,
        ),
    ],
)
def test_an_http11_request_needs_a_host(
    fns: dict[str, Served], request_bytes: bytes, status: int, message: str | None
) -> None:
    """RFC 9112 3.2: no Host, or one that is not a host name, is a 400 (in JSON)."""
    port = urlsplit(fns["token"].url).port
    assert port is not None
    got, headers, body = raw_exchange(port, request_bytes)
    assert got == status, body[:300]
    if message is not None:
        assert message in json.loads(body)["message"]
        assert headers["X-Request-ID"]


@pytest.mark.parametrize("function", ["token", "dashboard"])
def test_an_absolute_target_without_a_path_is_the_root_not_a_redirect(
    fns: dict[str, Served], function: str
) -> None:
    """RFC 9112 3.2.2: ``GET http://x`` asks for ``/``. The routing answered a 308 to
    ``http://`` + the client's Host, in HTML, without X-Request-ID."""
    port = urlsplit(fns[function].url).port
    assert port is not None
    request = b"GET http://x HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n"
    got, headers, body = raw_exchange(port, request)
    assert "evil.example" not in headers.get("Location", "") + body.decode("latin-1")
    assert headers["X-Request-ID"]
    if function == "dashboard":  # its page, which sends a browser without a session to log in
        assert got == 303 and headers["Location"].startswith("/login"), headers
    else:  # the token function has nothing at / for GET
        assert got in (404, 405) and json.loads(body)["request_id"] == headers["X-Request-ID"]


def _two_exchanges(port: int, first: bytes) -> list[bytes]:
    """``first`` then a pipelined ``GET /healthz`` on one connection: the answers' heads."""
    second = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        with contextlib.suppress(OSError):  # the server may stop reading once it answered
            sock.sendall(first + second)
        answer = b""
        with contextlib.suppress(OSError):  # a reset once it closed
            while chunk := sock.recv(65536):
                answer += chunk
    return [part.split(b"\r\n\r\n", 1)[0] for part in answer.split(b"HTTP/1.1 ")[1:]]


@pytest.mark.parametrize(
    ("size", "chunked", "kept_alive"),
    [
        (30_000, False, True),
        (65_535, False, True),
        (65_536, False, False),  # gunicorn gives up on reaching its limit
        (70_000, False, False),
        (100, True, True),  # a small chunked body is drained: no connection is lost
        (60_000, True, True),
        (65_536, True, True),  # read to its end within the limit
        (66_000, True, False),
        (200_000, True, False),  # its length known only once read: read before answering
    ],
)
def test_a_body_left_unread_is_answered_with_close_when_the_next_request_would_be_lost(
    fns: dict[str, Served], size: int, chunked: bool, kept_alive: bool
) -> None:
    """gunicorn drains at most 64 KiB of a body the function left unread, then drops the
    connection: the answer said keep-alive, and a pipelined request was lost unanswered."""
    port = urlsplit(fns["token"].url).port
    assert port is not None
    framing = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: %d" % size
    body = b"%x\r\n%s\r\n0\r\n\r\n" % (size, b"x" * size) if chunked else b"x" * size
    first = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + framing + b"\r\n\r\n" + body
    heads = _two_exchanges(port, first)
    assert heads and heads[0].startswith(b"200"), heads
    if kept_alive:
        assert len(heads) == 2 and b"Connection: keep-alive" in heads[0], heads
    else:
        assert len(heads) == 1 and b"Connection: close" in heads[0], heads


def test_a_broken_chunk_after_the_form_is_answered_with_close(fns: dict[str, Served]) -> None:
    """The function read its form, then the chunk after it was broken: gunicorn drops the
    connection after the answer, so the answer must not promise keep-alive."""
    port = urlsplit(fns["token"].url).port
    assert port is not None
    first = (
        b"POST /token HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n\r\n3\r\nu=a\r\nzz\r\n0\r\n\r\n"
    )
    heads = _two_exchanges(port, first)
    assert len(heads) == 1 and b"Connection: close" in heads[0], heads


def test_a_stalled_chunked_body_is_answered_without_waiting_for_it(
    fns: dict[str, Served],
) -> None:
    """A client that sends part of a chunked body and stops: the answer went out only at
    the request deadline (60 s), as a shut socket, with nothing in it."""
    from common.server import DRAIN_SECONDS

    port = urlsplit(fns["token"].url).port
    assert port is not None
    with socket.create_connection(("127.0.0.1", port), timeout=DRAIN_SECONDS + 8) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        sock.sendall(b"5\r\nhello\r\n")  # and nothing more
        answer = sock.recv(65536)  # a timeout here fails the test
    assert answer.startswith(b"HTTP/1.1 200 "), answer
    assert b"Connection: close" in answer, answer


def test_a_trickled_chunked_body_is_answered_within_the_drain_time(
    fns: dict[str, Served],
) -> None:
    """A client trickling its body a byte every half second: each read restarted the 2 s
    timeout, and the answer never went out (the request deadline shut the socket)."""
    from common.server import DRAIN_SECONDS

    port = urlsplit(fns["token"].url).port
    assert port is not None
    with socket.create_connection(("127.0.0.1", port), timeout=DRAIN_SECONDS + 8) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        sock.sendall(b"400\r\n")
        answered = threading.Event()

        def trickle() -> None:
            while not answered.wait(0.5):
                with contextlib.suppress(OSError):
                    sock.send(b"x")

        trickler = threading.Thread(target=trickle, daemon=True)
        trickler.start()
        try:
            answer = sock.recv(65536)  # a timeout here fails the test
        finally:
            answered.set()
            trickler.join()
    assert answer.startswith(b"HTTP/1.1 200 "), answer
    assert b"Connection: close" in answer, answer


def test_a_closed_connections_silent_client_does_not_hold_up_the_others(
    fns: dict[str, Served],
) -> None:
    """gunicorn lingers on a connection it closes (up to 2 s, reading what the client
    still sends) on the worker's main loop: a client that answered `Connection: close`
    with silence held every other connection of the worker for those 2 s (1.7-1.9 s
    measured). The lingering is on a thread of its own; the connection is still closed
    once it is over."""
    import psutil

    served = fns["token"]
    port = urlsplit(served.url).port
    assert port is not None
    with socket.create_connection(("127.0.0.1", port), timeout=10) as silent:
        silent.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert silent.recv(65536).startswith(b"HTTP/1.1 200 ")
        # ... and the client neither sends nor closes.
        started = time.monotonic()
        other = requests.get(f"{served.url}/healthz", timeout=10)
        waited = time.monotonic() - started
        assert other.status_code == 200
        assert waited < 1.0, f"the next connection waited {waited:.2f} s"
        silent_port = silent.getsockname()[1]

        def server_holds_it() -> bool:
            workers = psutil.Process(served.process.pid).children(recursive=True)
            return any(
                conn.raddr and conn.raddr.port == silent_port
                for worker in workers
                for conn in worker.net_connections(kind="tcp")
            )

        deadline = time.monotonic() + 10
        while server_holds_it() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not server_holds_it(), "the lingering connection was never closed"


def test_a_stopping_worker_lingers_on_closed_connections_before_it_exits(
    serve: Serve, marts_dsn: str
) -> None:
    """Lingering sockets count as connections: a stopping worker waits for them as gunicorn
    waits for its own. Uncounted, it exited at once and the kernel reset the connection
    of a client still sending (what lingering is there to avoid)."""
    served = serve("token", SALESMART_DATABASE_URL=marts_dsn)
    port = urlsplit(served.url).port
    assert port is not None
    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        client.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert client.recv(65536).startswith(b"HTTP/1.1 200 ")
        served.process.send_signal(signal.SIGTERM)  # the worker starts stopping
        # The client goes on sending for a second: read and dropped while it lingers.
        for _ in range(10):
            time.sleep(0.1)
            client.sendall(b"x" * 100)  # a reset connection fails here
    served.process.wait(timeout=30)


@pytest.mark.parametrize(
    ("framing", "status"),
    [
        (b"Content-Encoding: gzip\r\nContent-Length: 21", 415),
        (b"Content-Encoding: br\r\nTransfer-Encoding: chunked", 415),
        (b"Transfer-Encoding: gzip, chunked", 501),
        (b"Transfer-Encoding: deflate,chunked", 501),
        # Read as the form (a wrong password): no coding, however it is written.
        (b"Content-Encoding: identity\r\nContent-Length: 21", 401),
        (b"Content-Encoding:\r\nContent-Length: 21", 401),
        (b"Content-Encoding: Identity, identity\r\nContent-Length: 21", 401),
        (b"Content-Encoding: identity\r\nContent-Encoding: identity\r\nContent-Length: 21", 401),
    ],
)
@pytest.mark.parametrize(("function", "path"), [("token", "/token"), ("dashboard", "/login")])
def test_a_compressed_form_is_refused_not_read_as_text(
    fns: dict[str, Served], function: str, path: str, framing: bytes, status: int
) -> None:
    """gunicorn passes gzip and deflate transfer codings on undecoded, and nothing decodes a
    content coding: the compressed bytes were read as the form (a wrong password)."""
    port = urlsplit(fns[function].url).port
    assert port is not None
    form = b"username=u&password=p"
    body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(form), form) if b"chunked" in framing else form
    request = (
        b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nAccept: application/json\r\n"
        b"Connection: close\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        + framing
        + b"\r\n\r\n"
        + body
    )
    got, headers, answer = raw_exchange(port, request)
    if function == "dashboard" and status == 401:
        assert got not in (415, 501), answer[:300]  # read as a form: its page answers
        return
    assert got == status, answer[:300]
    assert json.loads(answer)["request_id"] == headers["X-Request-ID"]
    if status == 415:
        assert headers["Accept-Encoding"] == "identity"  # RFC 9110 15.5.16


BROKEN_CHUNKED_BODIES = [
    b"ZZ\r\nusername=a\r\n0\r\n\r\n",  # a chunk size that is not hexadecimal
    b"3\r\nabcXY0\r\n\r\n",  # a chunk not ended by CRLF
]


@pytest.mark.parametrize("body", BROKEN_CHUNKED_BODIES)
@pytest.mark.parametrize(("function", "path"), [("token", "/token"), ("dashboard", "/login")])
def test_a_body_with_broken_framing_is_a_bad_request(
    fns: dict[str, Served], function: str, path: str, body: bytes
) -> None:
    """gunicorn finds the broken framing only when the function reads the form: the
    client's mistake, answered 400 in the envelope, not a 500 logged as a server error."""
    port = urlsplit(fns[function].url).port
    assert port is not None
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nAccept: application/json\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    got, headers, answer = raw_exchange(port, head.encode() + body)
    assert got == 400, answer[:300]
    request_id = headers["X-Request-ID"]
    envelope_body = json.loads(answer)
    assert envelope_body["error"] == "invalid_request"
    assert envelope_body["request_id"] == request_id
    logged = [
        json.loads(line) for line in fns[function].output().splitlines() if request_id in line
    ]
    assert [entry.get("status") for entry in logged] == [400]  # no "unhandled error" line


@pytest.mark.parametrize("body", BROKEN_CHUNKED_BODIES)
@pytest.mark.parametrize(
    ("function", "request_line", "status"),
    [
        ("trends_pg", "GET /sales/pg-trends", 200),
        ("trends_pg", "POST /healthz", 405),
        ("dashboard", "GET /", 200),
        ("token", "GET /nowhere", 404),
    ],
)
def test_a_broken_body_the_function_does_not_read_leaves_its_answer_alone(
    fns: dict[str, Served],
    bearer: dict[str, str],
    function: str,
    request_line: str,
    status: int,
    body: bytes,
) -> None:
    """Before, functions-framework read the body after the function had answered, outside
    it: an HTML 500 without X-Request-ID, logged as the function's status."""
    port = urlsplit(fns[function].url).port
    assert port is not None
    head = (
        f"{request_line} HTTP/1.1\r\nHost: x\r\nAccept: application/json\r\n"
        f"Authorization: {bearer['Authorization']}\r\nConnection: close\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    )
    got, headers, answer = raw_exchange(port, head.encode() + body)
    assert got == status, answer[:300]
    request_id = headers["X-Request-ID"]
    if status >= 400:
        assert json.loads(answer)["request_id"] == request_id
    logged = [
        json.loads(line) for line in fns[function].output().splitlines() if request_id in line
    ]
    assert [entry.get("status") for entry in logged] == [status]


def _peak_rss(pid: int) -> int:
    """The most memory (kB) the process has ever held (VmHWM)."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1])


def test_a_large_body_nobody_reads_is_never_held_in_memory(fns: dict[str, Served]) -> None:
    # Before: the whole body was read into the worker after the answer (a 400 MB POST to
    # /healthz took a worker from 45 MB to 1.2 GB with three at once; pods hold 384 MiB).
    import psutil

    served = fns["trends_pg"]
    processes = [psutil.Process(served.process.pid)]
    processes += processes[0].children(recursive=True)
    before = {p.pid: _peak_rss(p.pid) for p in processes}
    body = b"x" * (200 * 1024 * 1024)
    with requests.Session() as session:  # kept alive: the server discards what is unread
        answer = session.post(f"{served.url}/healthz", data=body, timeout=120)
        assert answer.status_code == 405 and answer.headers["X-Request-ID"]
        assert session.get(f"{served.url}/healthz", timeout=10).status_code == 200
    grown = max(_peak_rss(p.pid) - before[p.pid] for p in processes)
    assert grown < 32 * 1024, f"peak RSS grew by {grown} kB"


HOSTILE_PARAMS: list[dict[str, str]] = [
    {"limit": "9" * 400},
    {"offset": "9" * 400},
    {"limit": "-1"},
    {"offset": "-5"},
    {"limit": "1e308"},
    {"offset": "NaN"},
    {"min_amount": "Infinity"},
    {"min_amount": "1e999999"},
    {"max_quantity": "99999999999999999999999999999"},
    {"min_avg_price": "5", "max_avg_price": "1"},
    {"product_prefix": "Halal\x00"},
    {"product_prefix": "Halal\r\nX-Injected: 1"},
    {"product_prefix": "%' OR '1'='1"},
    {"product_prefix": "Ḩalāl 🍯"},
    {"product_prefix": "\u202eHalal"},
    {"product_prefix": "H" * 10_000},
    {"sale_month": "2023-13"},
    {"sale_month": "2023-02-30"},
    {"sale_month": "٢٠٢٣-١٠"},
    {"sale_month": "9999999999-01"},
    {"limit": "１０"},  # full-width digits
    {"limit": "10", "\x01\x02": "\x7f"},
]


# Values the contract allows (numbers >= 0 without an upper bound): 200 is right for them.
VALID_EXTREMES = [
    {"offset": "9" * 400},
    {"min_amount": "1e999999"},
    {"max_quantity": "99999999999999999999999999999"},
]


def test_hostile_query_values_are_4xx(fns: dict[str, Served], bearer: dict[str, str]) -> None:
    rng = random.Random(8)
    urls = [f"{fns['trends_pg'].url}/sales/pg-trends", f"{fns['dashboard'].url}/"]
    cases = list(HOSTILE_PARAMS)
    alphabet = [chr(c) for c in (*range(1, 0x80), 0xA0, 0x2028, 0xFEFF, 0x1F600, 0xE9)]
    for _ in range(40):  # long random query strings
        key = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 30)))
        value = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 3000)))
        cases.append({key: value})
    statuses: dict[int, int] = {}
    with requests.Session() as session:
        for url in urls:
            for params in cases:
                response = session.get(url, params=params, headers=bearer, timeout=30)
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                if params in VALID_EXTREMES and response.status_code == 200:
                    continue  # contract-valid values (no upper bound): past the end, empty
                assert 400 <= response.status_code < 500, (url, params, response.text[:300])
                no_leak(response)
                if url.endswith("pg-trends"):
                    assert response.headers["Content-Type"] == "application/json"
    print(f"{2 * len(cases)} hostile queries: {statuses}")


def _slow_clients(port: int, count: int, stop: threading.Event) -> list[socket.socket]:
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        sockets.append(sock)

    def drip() -> None:
        while not stop.is_set():
            for sock in sockets:
                with contextlib.suppress(OSError):
                    sock.sendall(b"X-a: b\r\n")
            stop.wait(1.0)

    threading.Thread(target=drip, daemon=True).start()
    return sockets


def test_slow_clients_cannot_pin_every_worker(serve: Serve, marts_dsn: str) -> None:
    """Three times as many clients as threads, each dripping a header line a second: each is
    cut off at the header deadline (2 s here; 10 s by default), so real requests are served
    within a few seconds, while the drip goes on."""
    served = serve(
        "trends_pg",
        SALESMART_DATABASE_URL=marts_dsn,
        THREADS="4",
        SALESMART_HEADER_TIMEOUT_SECONDS="2",
    )
    port = int(served.url.rsplit(":", 1)[1])
    stop = threading.Event()
    sockets = _slow_clients(port, 12, stop)
    try:
        time.sleep(1.0)
        waits = []
        for _ in range(3):
            started = time.monotonic()
            response = requests.get(f"{served.url}/healthz", timeout=20)
            waits.append(time.monotonic() - started)
            assert response.status_code == 200
        print(f"health answered after {[round(w, 1) for w in waits]} s beside 12 slow clients")
        assert max(waits) < 15, waits
        # Every slow client was cut off: its socket reads end-of-file (no response was owed).
        for sock in sockets:
            sock.settimeout(10)
            with contextlib.suppress(ConnectionResetError):
                assert sock.recv(1024) == b""
    finally:
        stop.set()
        for sock in sockets:
            sock.close()


# -- CSV through the command into real PostgreSQL ---------------------------------------------
HEADER = "transaction_id,product,price,quantity,date"


def cli(settings: Settings, tmp_path: Path, *args: str, **popen: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", *args],
        env=cli_env(settings, tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def ingest(settings: Settings, tmp_path: Path, path: Path) -> tuple[int, dict[str, Any], str]:
    process = cli(settings, tmp_path, "ingest", "--target", "postgres", "--json", str(path))
    out, err = process.communicate(timeout=180)
    result = json.loads(out.strip().splitlines()[-1]) if process.returncode == 0 else {}
    return process.returncode, result, err


def query(settings: Settings, sql: str) -> list[list[Any]]:
    conn = connect(settings.database_url)
    try:
        return [list(row) for row in conn.run(sql)]
    finally:
        conn.close()


def test_awkward_csv_end_to_end(settings: Settings, tmp_path: Path) -> None:
    big = "Halal " + "x" * 1_000_000
    lines = [
        "A1,Halal Dates,12.50,2,2023-10-01\r\n",
        f'A2,"{big}",13.00,1,2023-10-02\n',  # a 1 MB field: read whole, too long to index
        "A3,Halal\x00Tea,11.00,1,2023-10-03\r",  # a NUL byte: that row is malformed
        "A4,Halal Tea,11.00,1,2023-10-04\r\n",
        '"A5","Halal ""Quoted"", Tea",11.00,1,2023-10-05\n',
        "A6,Halal Tea,11.00,1,2023-10-06",  # no final line end
    ]
    path = tmp_path / "awkward.csv"
    path.write_bytes(("\ufeff" + HEADER + "\r\n" + "".join(lines)).encode())
    code, result, err = ingest(settings, tmp_path, path)
    assert code == 0, err
    assert "Traceback" not in err
    print(f"awkward CSV: {result}")
    assert result["read"] == 6
    assert result["loaded"] == 4 and result["rejected"] == 2
    ids = [r[0] for r in query(settings, "SELECT transaction_id FROM raw.transactions ORDER BY 1")]
    assert ids == ["A1", "A4", "A5", "A6"]  # the BOM did not stick to the first id
    assert query(settings, "SELECT product FROM raw.transactions WHERE transaction_id='A5'") == [
        ['Halal "Quoted", Tea']
    ]
    rejected = query(
        settings,
        "SELECT line_number, reason, length(raw_text) FROM raw.rejected_transactions"
        " ORDER BY line_number",
    )
    assert rejected == [
        # A line over 65,536 characters: its head, and how many more there were.
        [3, "product_too_long", len(kept_raw_text(lines[1].rstrip("\n")))],
        [4, "malformed_row", len(lines[2].rstrip("\r").replace("\x00", "\\x00"))],
    ]
    # Idempotent: the same file again loads nothing new.
    code, again, err = ingest(settings, tmp_path, path)
    assert code == 0, err
    assert again["loaded"] == 0
    assert query(settings, "SELECT count(*) FROM raw.transactions") == [[4]]


def test_binary_and_non_utf8_files_exit_2_loading_nothing(
    settings: Settings, tmp_path: Path
) -> None:
    for name, content in {
        "binary.csv": b"\x00\x01\x02" * 1000,
        "latin1.csv": (HEADER + "\nB1,Halal Caf\xe9,12,1,2023-01-01\n").encode("latin-1"),
    }.items():
        path = tmp_path / name
        path.write_bytes(content)
        process = cli(settings, tmp_path, "ingest", "--target", "postgres", str(path))
        out, err = process.communicate(timeout=60)
        assert process.returncode == 2, (name, out, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert query(settings, "SELECT count(*) FROM raw.transactions") == [[0]]


def test_sigkill_at_random_points_never_duplicates(
    settings: Settings, tmp_path: Path, pg_server: EmbeddedPostgres
) -> None:
    path = tmp_path / "many.csv"
    generate(path, 60_000, seed=21)
    # The expected rows: the same file loaded once, undisturbed, into a database of its own.
    reference = connect(create_database(pg_server))
    try:
        ingest_postgres(reference, path, settings)
        expected = sorted(
            r[0] for r in reference.run("SELECT transaction_id FROM raw.transactions")
        )
    finally:
        reference.close()
    rng = random.Random(int(os.environ.get("SALESMART_KILL_SEED", "8")))
    kills = []
    for _attempt in range(5):
        loader = cli(settings, tmp_path, "ingest", "--target", "postgres", "--json", str(path))
        delay = rng.uniform(0.3, 1.5)  # start-up, reading, COPY, commit
        try:
            loader.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            loader.send_signal(signal.SIGKILL)
            loader.wait()
            kills.append(round(delay, 2))
        else:
            loader.communicate()
        loaded = query(
            settings,
            "SELECT (SELECT count(*) FROM raw.transactions),"
            " (SELECT count(DISTINCT transaction_id) FROM raw.transactions),"
            " (SELECT coalesce(sum(rows_loaded), 0) FROM raw.loads)",
        )[0]
        # Either nothing of this file, or all of it exactly once.
        assert loaded[0] == loaded[1] == loaded[2], loaded
        assert loaded[0] in (0, len(expected)), loaded
    code, result, err = ingest(settings, tmp_path, path)
    assert code == 0, err
    ids = sorted(r[0] for r in query(settings, "SELECT transaction_id FROM raw.transactions"))
    assert ids == expected  # exactly the expected rows, none twice
    first = query(
        settings,
        "SELECT rows_read, rows_loaded, rows_rejected FROM raw.loads WHERE rows_loaded > 0",
    )
    assert len(first) == 1 and first[0][0] == 60_000 == first[0][1] + first[0][2], first
    print(f"SIGKILL after {kills} s in 5 runs; {len(expected)} rows expected; final {result}")
