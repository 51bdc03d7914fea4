"""common.logging: one whole JSON line per record on stdout, credential-like fields dropped."""

from __future__ import annotations

import json
import logging
import threading

import pytest

from common.logging import (
    JsonLogHandler,
    log_event,
    log_request,
    request_context,
    route_library_logs,
)


def test_a_request_is_one_json_line_with_its_fields(capsys: pytest.CaptureFixture[str]) -> None:
    log_request(
        function="trends_pg",
        request_id="r1",
        method="GET",
        path="/sales/pg-trends",
        status=503,
        duration_ms=1.23456,
        user="ana",
        rows=None,
    )
    (line,) = capsys.readouterr().out.splitlines()
    entry = json.loads(line)
    assert entry["severity"] == "ERROR" and entry["message"] == "request"
    assert entry["status"] == 503 and entry["duration_ms"] == 1.23 and entry["user"] == "ana"
    assert "rows" not in entry  # None is left out
    assert entry["time"].endswith("Z") and len(entry["time"]) == len("2026-01-01T00:00:00.000Z")


def test_events_inside_a_request_name_it(capsys: pytest.CaptureFixture[str]) -> None:
    """An event logged deep inside a call (a reconnect) carries the request it serves."""
    seen: dict[str, str] = {}

    def other_thread() -> None:  # another serving thread: its own request, or none
        log_event("elsewhere")

    with request_context(function="trends_pg", request_id="r7"):
        log_event("postgres unreachable", error_type="OperationalError", function=None)
        log_event("own fields win", request_id="r8")
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
    log_event("after")
    for line in capsys.readouterr().out.splitlines():
        entry = json.loads(line)
        seen[entry["message"]] = f"{entry.get('function')}/{entry.get('request_id')}"
    assert seen == {
        "postgres unreachable": "trends_pg/r7",
        "own fields win": "trends_pg/r8",
        "elsewhere": "None/None",
        "after": "None/None",
    }


def test_credential_like_fields_never_reach_the_log(capsys: pytest.CaptureFixture[str]) -> None:
    log_event(
        "login",
        level=logging.WARNING,
        user="ana",
        password="hunter2",
        access_token="t",
        Authorization="Bearer x",
        pii_key="k",
        database_dsn="postgresql://u:p@h/d",
    )
    entry = json.loads(capsys.readouterr().out)
    assert entry == {**entry, "severity": "WARNING", "user": "ana"}
    assert not {"password", "access_token", "Authorization", "pii_key", "database_dsn"} & set(entry)
    assert "hunter2" not in json.dumps(entry)


def test_lines_from_many_threads_are_never_interleaved(
    capsys: pytest.CaptureFixture[str],
) -> None:
    def write(worker: int) -> None:
        for n in range(200):
            log_event("tick", worker=worker, n=n, padding="x" * 500)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 8 * 200
    seen = {(e["worker"], e["n"]) for e in map(json.loads, lines)}
    assert len(seen) == 8 * 200


def test_libraries_warnings_become_json_lines(capsys: pytest.CaptureFixture[str]) -> None:
    """What ``FunctionApp`` installs: a library's warning (here urllib3's) as a JSON line,
    where Python's last-resort handler would print plain text to stderr."""
    root = logging.getLogger()
    before = list(root.handlers)
    try:
        route_library_logs()
        route_library_logs()  # once per process, however many apps are created
        added = [h for h in root.handlers if isinstance(h, JsonLogHandler)]
        assert len(added) == 1
        library = logging.getLogger("urllib3.connectionpool")
        library.info("Starting new HTTP connection (1): example:80")  # below WARNING: dropped
        try:
            raise ConnectionResetError("peer went away")
        except ConnectionResetError:
            library.warning("Retrying after %s", "a broken connection", exc_info=True)
        captured = capsys.readouterr()
        (line,) = [line for line in captured.out.splitlines() if "urllib3" in line]
        entry = json.loads(line)
        assert entry["severity"] == "WARNING"
        assert entry["message"] == "Retrying after a broken connection"
        assert entry["logger"] == "urllib3.connectionpool"
        assert entry["error_type"] == "ConnectionResetError"
        assert "peer went away" not in captured.out  # the exception's text is left out
        assert "Retrying" not in captured.err
    finally:
        root.handlers[:] = before


def test_a_line_is_written_whatever_text_a_field_holds() -> None:
    """A lone surrogate (from a signed token's ``sub``) made the write fail, and with it the
    request (500); U+2028 ends a line for some readers. Both are escaped; others stay."""
    from common.logging import json_line

    line = json_line("m", logging.INFO, {"user": "\ud800", "path": "/\u2028x", "p": "é"}, 0.0)
    line.encode("utf-8")  # writable
    assert "\u2028" not in line and line.count("\n") == 1
    entry = json.loads(line)
    assert (entry["user"], entry["path"], entry["p"]) == ("\ud800", "/\u2028x", "é")
