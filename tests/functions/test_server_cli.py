"""``salesmart-serve``: bad settings refused with one line before serving; quick shutdown;
answers to failures outside the application."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from gunicorn.http import errors as parse_errors

from common import errors
from common.config import REPO_ROOT
from common.server import command, launcher, transport_error, transport_error_response


def _run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args,
        env={**os.environ, **env},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("variable", "value", "needle"),
    [
        ("SALESMART_HEADER_TIMEOUT_SECONDS", "soon", "must be a number of seconds"),
        ("SALESMART_REQUEST_DEADLINE_SECONDS", "0", "must be positive"),
        ("SALESMART_HEADER_TIMEOUT_SECONDS", "-3", "must be positive"),
    ],
)
def test_bad_deadlines_are_refused(variable: str, value: str, needle: str) -> None:
    result = _run(command("trends_pg", "functions/trends_pg/main.py", port=1), **{variable: value})
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and variable in lines[0], result.stderr


def test_missing_target_or_source_is_refused(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("FUNCTION_TARGET", "FUNCTION_SOURCE")}
    no_target = subprocess.run(
        launcher(), env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert no_target.returncode == 2
    assert "FUNCTION_TARGET" in no_target.stderr.strip()
    no_source = _run(command("trends_pg", tmp_path / "missing.py"))
    assert no_source.returncode == 2
    assert (
        no_source.stderr.strip()
        == f"salesmart-serve: no function source at {tmp_path / 'missing.py'}"
    )


def test_quick_shutdown_signal_inside_pool_submit_exits() -> None:
    """SIGQUIT/SIGINT (gunicorn's quick shutdown, Ctrl-C) may land while the worker's main
    thread is inside ``tpool.submit``, which holds the pool's lock. gthread's own handler
    then shuts the pool down and waits for that lock forever (CPython #121649): the worker
    hung and outlived its master. Here the handler runs with the lock held, as it would
    then, and must exit at once."""
    import threading
    from concurrent.futures import ThreadPoolExecutor
    from types import SimpleNamespace

    from common.server import DeadlineThreadWorker

    worker = DeadlineThreadWorker.__new__(DeadlineThreadWorker)  # no sockets or app needed
    worker.alive = True
    worker.cfg = SimpleNamespace(worker_int=lambda _worker: None)
    worker.tpool = ThreadPoolExecutor(max_workers=1)
    outcome: list[BaseException] = []

    def signal_lands_inside_submit() -> None:
        with worker.tpool._shutdown_lock:  # what submit holds
            try:
                worker.handle_quit(3, None)
            except BaseException as exc:  # SystemExit is how a worker leaves
                outcome.append(exc)

    thread = threading.Thread(target=signal_lands_inside_submit, daemon=True)
    thread.start()
    thread.join(timeout=5)
    assert not thread.is_alive(), "the quit handler is stuck on the thread pool's lock"
    assert len(outcome) == 1 and isinstance(outcome[0], SystemExit)
    assert worker.alive is False
    worker.tpool.shutdown(wait=True)


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (parse_errors.InvalidResponseHeader("X-Bad\n"), 500),  # the application's fault
        (parse_errors.ConfigurationProblem("forwarded_allow_ips"), 500),
        (ValueError("secret detail"), 500),
        (parse_errors.LimitRequestLine(9000, 8190), 414),
        (parse_errors.InvalidRequestMethod("G E T"), 400),
    ],
)
def test_failures_outside_the_application_map_to_client_safe_answers(
    exc: BaseException, status: int
) -> None:
    error = transport_error(exc)
    assert error.status == status
    assert isinstance(error, errors.InternalError) == (status == 500)
    answer = transport_error_response(error, "rid-1")
    assert answer.startswith(f"HTTP/1.1 {status} ".encode())
    assert b"\r\nX-Request-ID: rid-1\r\n" in answer
    assert str(exc).encode() not in answer
