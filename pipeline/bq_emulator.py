"""The local BigQuery stand-in: start, wait for, and stop ``bqemulator``.

``bqemulator`` (DuckDB behind the BigQuery REST API) runs from its own environment,
``.venv-bqemu`` (see the Makefile), as a child process in its own process group, bound to
127.0.0.1. Its state lives in one directory: ``bqemulator.duckdb`` (the data, when
persistent), ``bqemulator.log`` (its log, kept for error messages) and ``uploads/``.
``salesmart up`` gives it a directory under ``.salesmart/`` so the data survives restarts
(checked: tables and rows persist across a clean stop and across SIGKILL, DuckDB replays
its WAL); tests give it a temporary one. In memory (``persistent=False``) the stand-in's
catalog does not list tables created by SQL DDL (its own docs), so dbt needs the
persistent mode. Start-up takes ~2-5 s, mostly the emulator's own imports.

Real BigQuery never needs it: :func:`bigquery_needs_emulator` is the one decision.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from common.config import REPO_ROOT, Settings, without_secrets
from common.local_run import open_private
from common.process import (
    WATCHED_PARENT_ENV,
    python_of_script,
    python_watched_by_parent,
    stop_group,
    watched_by_parent,
)
from pipeline.netutil import port_is_free

EXECUTABLE_ENV = "SALESMART_BQEMU_BIN"
DEFAULT_EXECUTABLE = REPO_ROOT / ".venv-bqemu" / "bin" / "bqemulator"
# Run by the stand-in's interpreter: no file access for its SQL, no requests from browsers.
GUARD = Path(__file__).with_name("bqemu_guarded.py")
READY_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 10.0
LOG_NAME = "bqemulator.log"
PID_NAME = "bqemulator.pid"


class EmulatorError(RuntimeError):
    """The stand-in could not be started; the message is one line for the user."""


def bigquery_needs_emulator(settings: Settings) -> bool:
    """Whether ``salesmart up`` (or a test) must start the local stand-in.

    - an endpoint is already given (``SALESMART_BQ_ENDPOINT``): use it, start nothing;
    - real BigQuery is configured: a project other than the local placeholder
      (``SALESMART_BQ_PROJECT`` / ``GOOGLE_CLOUD_PROJECT`` / the config file), or a
      service-account file (``GOOGLE_APPLICATION_CREDENTIALS``): start nothing;
    - otherwise (a fresh clone, no GCP account): start the stand-in.
    """
    return settings.bigquery.needs_stand_in


def emulator_executable() -> Path:
    """The ``bqemulator`` script (``SALESMART_BQEMU_BIN`` overrides the Makefile's)."""
    return Path(os.environ.get(EXECUTABLE_ENV) or DEFAULT_EXECUTABLE)


@dataclass
class EmulatorHandle:
    """A running stand-in. ``stop()`` (or leaving the ``with`` block) ends it."""

    endpoint: str
    port: int
    project: str
    state_dir: Path
    process: subprocess.Popen[bytes] = field(repr=False)
    persistent: bool = True
    executable: Path | None = None

    @property
    def log_path(self) -> Path:
        return self.state_dir / LOG_NAME

    @property
    def pid(self) -> int:
        return self.process.pid

    def is_running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
        """SIGTERM to its process group, SIGKILL after ``timeout``; idempotent."""
        stop_group(self.process, timeout)
        pid_file = self.state_dir / PID_NAME
        with contextlib.suppress(OSError, ValueError):
            if int(pid_file.read_text().strip()) == self.process.pid:
                pid_file.unlink()

    def restart(self, ready_timeout: float = READY_TIMEOUT_SECONDS) -> None:
        """Stop and start again on the same port and data (clients keep their endpoint)."""
        self.stop()
        fresh = start_emulator(
            self.state_dir,
            self.project,
            port=self.port,
            persistent=self.persistent,
            ready_timeout=ready_timeout,
            executable=self.executable,
        )
        self.process = fresh.process

    def __enter__(self) -> EmulatorHandle:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _running_pid(state_dir: Path) -> int | None:
    """The pid of a live emulator already serving ``state_dir`` (from its pid file)."""
    try:
        pid = int((state_dir / PID_NAME).read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        try:
            os.kill(pid, 0)
        except OSError:
            return None
        return pid
    return pid if b"bqemulator" in cmdline or GUARD.name.encode() in cmdline else None


def _log_tail(path: Path, lines: int = 200) -> list[str]:
    try:
        return path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
    except OSError:
        return []


def _listen_port(path: Path) -> int | None:
    """The REST port from the emulator's ``rest.listen`` log event (JSON lines)."""
    for line in _log_tail(path, 400):
        if '"rest.listen"' not in line:
            continue
        with contextlib.suppress(ValueError, TypeError, KeyError):
            return int(json.loads(line)["port"])
    return None


def _failure_reason(path: Path) -> str:
    """One line saying why the emulator died, from its log."""
    for line in reversed(_log_tail(path)):
        text = line.strip()
        if not text:
            continue
        lowered = text.lower()
        if "could not set lock" in lowered or "conflicting lock" in lowered:
            return "its data directory is in use by another process"
        if "address already in use" in lowered or "errno 98" in lowered:
            return "the port is already in use"
        if "error" in lowered or "exception" in lowered:
            return text[:300]
    return "no error in its log"


def _ready(endpoint: str, timeout: float) -> bool:
    try:
        with urllib.request.urlopen(f"{endpoint}/readyz", timeout=timeout) as response:  # noqa: S310 - loopback http  # nosec B310
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def emulator_command(
    exe: Path, state_dir: Path, project: str, port: int | None, *, persistent: bool = True
) -> list[str]:
    """The command line; through a parent watch (``watched_by_parent``) when ``exe`` is a
    Python console script, so a killed ``salesmart up`` or test run leaks no server holding
    the data directory's lock."""
    command = [
        str(exe),
        "start",
        "--rest-host",
        "127.0.0.1",
        "--rest-port",
        str(port or 0),
        "--grpc-host",
        "127.0.0.1",
        "--grpc-port",
        "0",
        "--project",
        project,
        "--log-format",
        "json",
        "--log-level",
        "info",
    ]
    command += ["--persistent", "--data-dir", str(state_dir)] if persistent else ["--ephemeral"]
    interpreter = python_of_script(exe)
    if interpreter is None:  # not a console script (a test's stand-in): run as it is
        return watched_by_parent(command, signal.SIGTERM)
    # The console script's interpreter runs our guard, which then starts bqemulator itself.
    return python_watched_by_parent(interpreter, [str(GUARD), *command[1:]], signal.SIGTERM)


def _claim_state_dir(state_dir: Path, port: int | None) -> None:
    """Make the state folder (owner only) and refuse one another stand-in uses, or a taken port."""
    state_dir.mkdir(parents=True, exist_ok=True)
    # The data holds the loaded rows (transaction ids in clear): owner only, as the keys.
    state_dir.chmod(0o700)
    other = _running_pid(state_dir)
    if other is not None:
        raise EmulatorError(
            f"a BigQuery stand-in (pid {other}) is already using {state_dir}; stop it first"
            " (if it is a starting `salesmart up`'s, run this again once up serves; if its"
            " `up` has just stopped, once it has gone, within seconds)"
        )
    if port is not None and not port_is_free(port):
        raise EmulatorError(f"cannot start the BigQuery stand-in: 127.0.0.1:{port} is in use")


def _emulator_env(uploads: Path) -> dict[str, str]:
    """The stand-in's environment: ours, less secrets, libpq's PG* (PGPASSWORD) and any
    BQEMU_* setting, plus its own."""
    # Only our own settings: no BQEMU_* from the caller, no network fetch of the Avro
    # extension (it stalls start-up offline; Avro loads are not used).
    # Nor any secret of ours: it needs none, never talks to PostgreSQL, and runs any SQL.
    env = {
        k: v for k, v in without_secrets(os.environ).items() if not k.startswith(("BQEMU_", "PG"))
    }
    env.update(
        {
            "BQEMU_ENABLE_FORMAT_EXTENSIONS": "false",
            "BQEMU_UPLOAD_STAGING_DIR": str(uploads),
            "BQEMU_TRACING_ENABLED": "false",
            WATCHED_PARENT_ENV: str(os.getpid()),
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def _keep_last_log(log_path: Path) -> None:
    """Move the last run's log aside (``.1``), owner-only."""
    # The last run's log is kept beside (its lines say why it stopped); this run's is
    # appended to, so `up` can empty a full one in place while the stand-in writes on.
    with contextlib.suppress(FileNotFoundError):
        log_path.replace(log_path.with_name(LOG_NAME + ".1"))
        log_path.with_name(LOG_NAME + ".1").chmod(0o600)  # an older release's was 0644


def _wait_ready(
    process: subprocess.Popen[bytes], port: int | None, log_path: Path, ready_timeout: float
) -> int:
    """The port the started stand-in answers ``/readyz`` on, once it does."""
    deadline = time.monotonic() + ready_timeout
    bound: int | None = None
    while True:
        if process.poll() is not None:
            raise EmulatorError(
                f"the BigQuery stand-in exited with code {process.returncode} at start: "
                f"{_failure_reason(log_path)} (log: {log_path})"
            )
        if bound is None:
            bound = port or _listen_port(log_path)
        if bound is not None and _ready(f"http://127.0.0.1:{bound}", 1.0):
            return bound
        if time.monotonic() > deadline:
            raise EmulatorError(
                f"the BigQuery stand-in was not ready within {ready_timeout:.0f} s "
                f"(log: {log_path})"
            )
        time.sleep(0.05)


def start_emulator(
    state_dir: Path,
    project: str,
    port: int | None = None,
    *,
    persistent: bool = True,
    ready_timeout: float = READY_TIMEOUT_SECONDS,
    executable: Path | None = None,
) -> EmulatorHandle:
    """Start the stand-in on 127.0.0.1 and return once it answers ``/readyz``.

    ``port=None`` lets the emulator bind a free port (read back from its log, so there is
    no race with other processes picking ports). ``persistent=False`` keeps data in memory
    (state_dir then only holds the log). Raises :class:`EmulatorError` with a one-line
    reason (log file named) when it cannot start or is not ready within ``ready_timeout``.
    """
    exe = executable or emulator_executable()
    if not exe.exists():
        raise EmulatorError(
            f"the BigQuery stand-in is not installed ({exe} is missing); run 'make install'"
        )
    state_dir = state_dir.resolve()
    _claim_state_dir(state_dir, port)
    log_path = state_dir / LOG_NAME
    uploads = state_dir / "uploads"
    uploads.mkdir(exist_ok=True)
    command = emulator_command(exe, state_dir, project, port, persistent=persistent)
    _keep_last_log(log_path)
    with open_private(log_path) as log:  # owner only, as the functions' logs
        try:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=state_dir,  # it reads a .bqemu.toml from its working directory
                env=_emulator_env(uploads),
                start_new_session=True,
            )
        except OSError as exc:
            raise EmulatorError(f"cannot run the BigQuery stand-in {exe}: {exc.strerror}") from None
    try:
        bound = _wait_ready(process, port, log_path, ready_timeout)
    except BaseException:
        stop_group(process, STOP_TIMEOUT_SECONDS)
        raise
    (state_dir / PID_NAME).write_text(f"{process.pid}\n")
    return EmulatorHandle(
        endpoint=f"http://127.0.0.1:{bound}",
        port=bound,
        project=project,
        state_dir=state_dir,
        process=process,
        persistent=persistent,
        executable=exe,
    )


@contextlib.contextmanager
def bigquery_for_command(settings: Settings, state_dir: Path) -> Iterator[Settings]:
    """Settings with a usable BigQuery for one command's duration.

    Real BigQuery, or an endpoint already given: ``settings`` unchanged, nothing started.
    Otherwise a stand-in on ``state_dir`` (persistent) for the duration, stopped after.
    """
    if not bigquery_needs_emulator(settings):
        yield settings
        return
    from pipeline.runtime import require_local

    require_local("local BigQuery stand-in", "SALESMART_BQ_PROJECT")
    with start_emulator(state_dir, settings.bigquery.project) as handle:
        yield dataclasses.replace(
            settings,
            bigquery=dataclasses.replace(settings.bigquery, api_endpoint=handle.endpoint),
        )
