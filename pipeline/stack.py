"""``salesmart up`` and ``salesmart serve``: the local stack, started and stopped as one.

``up`` starts (unless configured elsewhere) the embedded PostgreSQL and the BigQuery
stand-in, migrates, loads the data into both warehouses, runs dbt on both, serves the four
functions on loopback, writes ``.salesmart/endpoints.json`` and waits for Ctrl-C, which
stops everything it started. A stand-in or embedded server that dies meanwhile is started
again on its port and data.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from common.config import REPO_ROOT, Settings, ValidationRules
from common.functions import FUNCTION_PATHS, FUNCTIONS
from common.local_run import (
    ENDPOINTS_FILE,
    UP_LOCK_FILE,
    UP_PID_FILE,
    ensure_state_dir,
    open_private,
    running_stack,
    state_dir,
    write_private,
)
from common.process import signals_deferred, sleep_unless_stopped, stop_group, stop_requested
from common.server import PARENT_PID_ENV, serving_variables
from common.server import command as serve_command
from common.wording import how_many
from pipeline.netutil import port_is_free
from pipeline.progress import stdout_is_terminal
from pipeline.runtime import bigquery_state_dir, cli_settings, share_up_keys

if TYPE_CHECKING:
    from pipeline.bq_emulator import EmulatorHandle
    from pipeline.postgres_embedded import EmbeddedPostgres

HEALTH_PATH = "/healthz"
READY_TIMEOUT_SECONDS = 60
# Per function log of the local run (one JSON line per request: ~90 MB in 20 minutes of
# benchmark load); one older copy is kept beside it.
LOG_MAX_BYTES = 64 * 1024 * 1024
ADMIN_USER = "admin"
LOCK_ATTEMPTS = 5
ADMIN_PASSWORD_FILE = "admin-password"  # noqa: S105 - a file name, not a password  # nosec B105
ADMIN_PASSWORD_VARIABLE = "SALESMART_ADMIN_PASSWORD"  # noqa: S105  # nosec B105 - a variable's name
ADMIN_PASSWORD_UNSHOWN_FILE = "admin-password.unshown"  # noqa: S105  # nosec B105 - a file name


class StackError(RuntimeError):
    """The stack cannot start; one line for the user."""


def say(message: str) -> None:
    print(message, flush=True)


@contextlib.contextmanager
def step(what: str) -> Iterator[None]:
    started = time.monotonic()
    print(f"- {what} ...", end="", flush=True)
    try:
        yield
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the step did not fail, it was stopped
        print(" interrupted", flush=True)
        raise
    except BaseException:
        print(" failed", flush=True)
        raise
    print(f" done ({time.monotonic() - started:.1f}s)", flush=True)


@contextlib.contextmanager
def counted_step(what: str, total: int) -> Iterator[Callable[[int], None]]:
    """``step`` that shows, on a terminal, how much of ``total`` is done after its line (the
    callable it gives takes the count done so far); the line then ends as a step's does."""
    shown = ""
    on_terminal = stdout_is_terminal()

    def advance(done: int) -> None:
        nonlocal shown
        percent = f" {min(100, done * 100 // max(total, 1))}%"
        if on_terminal and percent != shown:
            print(f"\r- {what} ...{percent}", end="", flush=True)
            shown = percent

    with step(what):
        try:
            yield advance
        finally:
            if shown:  # the step's own word ("done", "failed") goes where the count was
                print(f"\r- {what} ...{' ' * len(shown)}\r- {what} ...", end="", flush=True)


# -- function processes -------------------------------------------------------------------
def function_env(settings: Settings, *, dev: bool = True) -> dict[str, str]:
    """The environment a function process gets: this command's, every ``SALESMART_*``
    setting included (a mart schema or dataset, timeouts: what dbt was given too), with
    what this command resolved made explicit, secrets included."""
    env = dict(os.environ)
    env.update(
        {
            "SALESMART_ENV": "dev" if dev else settings.env,
            "SALESMART_CONFIG": str(settings.config_path.resolve()),
            "SALESMART_DATABASE_URL": settings.database_url,
            "SALESMART_JWT_SECRET": settings.jwt_secret,
            "SALESMART_PII_KEY": settings.pii_key,
            "SALESMART_BQ_PROJECT": settings.bigquery.project,
            "SALESMART_BQ_LOCATION": settings.bigquery.location,
            "PYTHONUNBUFFERED": "1",
        }
    )
    if settings.bigquery.credentials_file:  # made absolute when read: they run elsewhere
        env["GOOGLE_APPLICATION_CREDENTIALS"] = settings.bigquery.credentials_file
    if settings.bigquery.api_endpoint:
        env["SALESMART_BQ_ENDPOINT"] = settings.bigquery.api_endpoint
    return env


def check_port_base(port_base: int, count: int) -> None:
    """``--port-base``: room for ``count`` ports from it, above the privileged ones."""
    highest = 65536 - count
    if not 1024 <= port_base <= highest:
        raise StackError(f"--port-base must be between 1024 and {highest}")


#: Set by the Makefile's ``up``: its user passes options through ``UP_ARGS``.
MAKE_UP_ENV = "SALESMART_MAKE_UP"


def require_free_ports(ports: Iterable[int], option: str = "--port-base") -> None:
    """Stop with a one-line reason when another program listens on one of ``ports``."""
    busy = [str(port) for port in ports if not port_is_free(port)]
    if busy:
        taken = (
            f"port {busy[0]} on 127.0.0.1 is"
            if len(busy) == 1
            else f"ports {', '.join(busy)} on 127.0.0.1 are"
        )
        raise StackError(f"{taken} in use; choose others with {option}")


class FunctionProcesses:
    """One ``salesmart-serve`` (functions-framework) process per function, each on its own
    loopback port."""

    def __init__(
        self, functions: Sequence[str], port_base: int, env: dict[str, str], log_dir: Path
    ) -> None:
        self.ports = {name: port_base + FUNCTIONS.index(name) for name in functions}
        self.env = env
        self.log_dir = log_dir
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def urls(self) -> dict[str, str]:
        return {name: f"http://127.0.0.1:{port}" for name, port in self.ports.items()}

    def start(self) -> None:
        require_free_ports(self.ports.values())  # again: something may have taken one since
        # Owner only: the lines name accounts that log in (and fail to).
        self.log_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        for name, port in self.ports.items():
            source = REPO_ROOT / "functions" / name / "main.py"
            # Deferred: a Ctrl-C raised inside Popen once the process is forked would leave
            # it unrecorded here, and so not stopped with the others.
            with signals_deferred(), open_private(self.log_dir / f"{name}.log") as log:
                self.processes[name] = subprocess.Popen(
                    serve_command(name, source, "127.0.0.1", port),
                    env={**self.env, PARENT_PID_ENV: str(os.getpid())},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                    cwd=str(REPO_ROOT),
                )
        self.wait_ready()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        pending = dict(self.urls())
        while pending:
            with signals_deferred():  # polls processes and HTTP: a Ctrl-C is raised after
                for name, url in list(pending.items()):
                    process = self.processes[name]
                    if process.poll() is not None:
                        raise StackError(
                            f"function {name} exited (code {process.returncode});"
                            f" see {self.log_dir / (name + '.log')}"
                        )
                    try:
                        with urllib.request.urlopen(url + HEALTH_PATH, timeout=2) as response:  # noqa: S310 - loopback  # nosec B310
                            if response.status == 200:
                                del pending[name]
                    except (urllib.error.URLError, OSError):
                        pass
                    if stop_requested():
                        break
                if pending and time.monotonic() > deadline:
                    raise StackError(
                        f"function(s) {', '.join(pending)} not ready after"
                        f" {READY_TIMEOUT_SECONDS}s; see {self.log_dir}"
                    )
                if pending:
                    sleep_unless_stopped(0.1)

    def dead(self) -> list[str]:
        return [name for name, p in self.processes.items() if p.poll() is not None]

    def rotate_logs(self, max_bytes: int = LOG_MAX_BYTES) -> None:
        """Keep each function's log under about ``max_bytes`` (``rotate_log``)."""
        for name in self.processes:
            rotate_log(self.log_dir / f"{name}.log", max_bytes)

    def stop(self) -> None:
        for process in self.processes.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10  # all were asked at once: one grace for all
        for process in self.processes.values():
            stop_group(process, max(0.1, deadline - time.monotonic()))


def rotate_log(path: Path, max_bytes: int = LOG_MAX_BYTES) -> None:
    """A log over ``max_bytes`` is copied to ``NAME.log.1`` (replacing the older copy) and
    emptied in place. Its writer holds it open for appending, so it writes on at the new
    end; lines written between the copy and the emptying (milliseconds) are lost, as with
    logrotate's ``copytruncate``."""
    try:
        if path.stat().st_size < max_bytes:
            return
        rotated = path.with_name(path.name + ".1")
        rotated.unlink(missing_ok=True)
        with path.open("rb") as source, open_private(rotated) as copy:
            shutil.copyfileobj(source, copy)
        os.truncate(path, 0)
    except OSError:
        pass  # a full disk or a removed file: tried again on the next round


# -- waiting for Ctrl-C -------------------------------------------------------------------
def function_lines(urls: dict[str, str]) -> list[str]:
    """One line per function, as `up` and `serve` say them: its URL with its operation path."""
    return [f"  {name:<10} {url}{FUNCTION_PATHS[name]}" for name, url in urls.items()]


def wait_until_stopped(
    functions: FunctionProcesses,
    announcement: Sequence[str],
    emulator: EmulatorHandle | None = None,
    database: EmbeddedPostgres | None = None,
) -> int:
    """Says ``announcement`` (what is serving, and that Ctrl-C stops it), then waits until a
    function dies (1) or Ctrl-C / SIGTERM (0; the CLI makes both a ``KeyboardInterrupt``:
    ``common.process.stopped_by_signals``). The BigQuery stand-in or the embedded
    PostgreSQL, when one stops meanwhile, is started again on its port and data, so the
    functions (which answer 503 meanwhile) recover by themselves; one that cannot start
    again stops ``up`` (1).

    The announcement is said inside the wait: a Ctrl-C that follows any of its lines is a
    clean stop (0), never "interrupted" (130) from a moment between saying and waiting."""
    try:
        from pipeline.bq_emulator import EmulatorError
        from pipeline.postgres_embedded import EmbeddedPostgresError

        for line in announcement:
            say(line)
        while True:
            with signals_deferred():  # polls processes: a Ctrl-C is raised after the round
                dead = functions.dead()
                emulator_stopped = emulator is not None and not emulator.is_running()
                database_stopped = database is not None and not database.is_running()
                if not (dead or emulator_stopped or database_stopped):
                    functions.rotate_logs()
                    if emulator is not None:  # a line per request it answers
                        rotate_log(emulator.log_path)
                    sleep_unless_stopped(0.5)
            if dead:
                say(f"salesmart: function(s) {', '.join(dead)} stopped unexpectedly; shutting down")
                return 1
            try:
                if emulator is not None and emulator_stopped:
                    code = emulator.process.returncode
                    say(
                        f"salesmart: the BigQuery stand-in stopped (exit {code}); starting it again"
                    )
                    emulator.restart()
                    say(f"  bigquery   {emulator.endpoint} again")
                if database is not None and database_stopped:
                    say("salesmart: PostgreSQL (embedded) stopped; starting it again")
                    database.restart()
                    say(f"  postgres   127.0.0.1:{database.port} again")
            except (EmulatorError, EmbeddedPostgresError) as exc:
                say(f"salesmart: {exc}; shutting down")
                return 1
    except KeyboardInterrupt:
        say("\nstopping ...")
        return 0


# -- up -----------------------------------------------------------------------------------
def named_admin_password(settings: Settings) -> tuple[str, str, bool]:
    """The demo admin's password as `up` names it, without making one: the given one
    (``SALESMART_ADMIN_PASSWORD``), else the one kept in the folder ("" if none); where it
    is; and whether it is still to be shown."""
    given = os.environ.get(ADMIN_PASSWORD_VARIABLE, "")
    if given:
        return given, ADMIN_PASSWORD_VARIABLE, False
    state = ensure_state_dir(settings)
    path = state / ADMIN_PASSWORD_FILE
    kept = path.read_text().strip() if path.exists() else ""
    return kept, str(path), bool(kept) and (state / ADMIN_PASSWORD_UNSHOWN_FILE).exists()


def admin_password(settings: Settings) -> tuple[str, bool]:
    """The demo admin's password, and whether it is still to be shown.

    A generated password is shown once, by the first ``up`` that gets to serve: one stopped
    before that leaves it marked unshown (``admin-password.unshown``) for the next. A given
    one (``SALESMART_ADMIN_PASSWORD``) is kept in the file too, so the file always holds the
    password that logs in (the README's examples read it) and a later ``up`` keeps it.
    """
    state = ensure_state_dir(settings)
    path = state / ADMIN_PASSWORD_FILE
    unshown = state / ADMIN_PASSWORD_UNSHOWN_FILE
    password, where, still_unshown = named_admin_password(settings)
    if where == ADMIN_PASSWORD_VARIABLE:
        if not path.exists() or path.read_text().strip() != password:
            write_private(path, password + "\n")
        unshown.unlink(missing_ok=True)
        return password, False
    if password:
        return password, still_unshown
    import secrets

    password = secrets.token_urlsafe(15)
    write_private(unshown, "")  # first: a stop between the two writes still shows it
    write_private(path, password + "\n")
    return password, True


@dataclasses.dataclass(frozen=True)
class AdminLogin:
    #: None: an account of the operator's, left as it was (password unknown to `up`).
    password: str | None
    unshown: bool = False
    #: An account whose name differs from ``admin`` only in case: no ``admin`` was made.
    look_alike: str | None = None
    #: The operator's account, left as it was, does not take the password `up` would
    #: announce (``SALESMART_ADMIN_PASSWORD``, else the kept file's): where that one is.
    other_password_in: str | None = None
    #: The operator's account, left as it was, is disabled.
    disabled: bool = False
    #: What resetting up's own demo account undid (``users disable``, ``users password``).
    undone: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class _AdminRow:
    password_hash: str
    disabled: bool
    role: str


def _admin_row(conn: Any) -> _AdminRow | None:
    rows = conn.run(
        "SELECT password_hash, disabled, role FROM auth.users WHERE username = :u", u=ADMIN_USER
    )
    return _AdminRow(str(rows[0][0]), bool(rows[0][1]), str(rows[0][2])) if rows else None


def _existing_admin(row: _AdminRow, settings: Settings) -> AdminLogin:
    """An operator's ``admin``, left as it is. The password `up` would name (given, else
    kept in the folder: perhaps another database's, when one folder served several) is
    announced only if it logs that account in; else `up` says why not."""
    from common.passwords import verify_password

    if row.disabled:
        return AdminLogin(None, disabled=True)
    password, where, unshown = named_admin_password(settings)
    if not password:
        return AdminLogin(None)
    if verify_password(password, row.password_hash):
        return AdminLogin(password, unshown)
    return AdminLogin(None, other_password_in=where)


def provision_admin(conn: Any, settings: Settings, *, external_database: bool) -> AdminLogin:
    """The demo admin. In up's own server it is up's: (re)set to the password kept under
    .salesmart/. In the operator's database (SALESMART_DATABASE_URL) an ``admin`` may be a
    real account: it is created when missing, never changed nor re-enabled."""
    from common.passwords import verify_password
    from pipeline.users import (
        AddLockTimeout,
        LookAlikeError,
        UserError,
        add_user,
        end_lockout,
        end_sessions,
    )

    row = _admin_row(conn)
    if external_database and row is not None:
        return _existing_admin(row, settings)
    password, unshown = admin_password(settings)
    # Said, not silent: an operator who disabled up's demo admin, or gave it a password of
    # their own, would else find it back.
    was_disabled = row is not None and row.disabled
    password_changed = row is not None and not verify_password(password, row.password_hash)
    if row is not None and not (was_disabled or password_changed) and row.role == "admin":
        end_lockout(conn, ADMIN_USER)  # as it is up's already: what a reset would still do
        return AdminLogin(password, unshown)
    if password_changed:
        # As `users password`: cookies of the old password end. First: a stop between the
        # two steps then ends them early, never leaves them once the password is new.
        end_sessions(conn, ADMIN_USER)
    try:
        add_user(
            conn,
            ADMIN_USER,
            password,
            "admin",
            settings.bcrypt_rounds,
            replace=not external_database,
        )
    except AddLockTimeout:  # no admin was made: not one to announce
        raise
    except LookAlikeError as exc:  # `Admin` beside `admin` would read as one account
        return AdminLogin(None, look_alike=exc.existing)
    except UserError:  # created meanwhile by someone else: theirs, kept
        return AdminLogin(None)
    undone = ["enabled again"] if was_disabled else []
    # A password given in SALESMART_ADMIN_PASSWORD is asked for: setting it undoes nothing.
    if password_changed and not os.environ.get(ADMIN_PASSWORD_VARIABLE):
        undone.append("its password set back")
    return AdminLogin(password, unshown, undone=tuple(undone))


def admin_password_shown(settings: Settings) -> None:
    (state_dir(settings) / ADMIN_PASSWORD_UNSHOWN_FILE).unlink(missing_ok=True)


def _data_files(data: Sequence[Path] | None, extra_rows: int, settings: Settings) -> list[Path]:
    from pipeline.csvsource import TransactionReader

    files = list(data) if data else [REPO_ROOT / "data" / "transactions.csv"]
    for path in files:
        # As `ingest` does, before anything starts: a missing or unusable file (no such file,
        # missing columns, not UTF-8) is exit 2 in a second, not after starting the warehouses.
        TransactionReader(path, settings.validation, settings.pii_key).check_whole_file()
    if extra_rows > 0:
        from pipeline.generate import generate

        rules = settings.validation
        # Made once per count and loading rules (the shipped rules keep the older name).
        shipped = rules == ValidationRules()
        digest = hashlib.sha256(repr(rules).encode()).hexdigest()[:8]
        name = f"generated-{extra_rows}.csv" if shipped else f"generated-{extra_rows}-{digest}.csv"
        out = ensure_state_dir(settings) / name
        if not out.exists():
            generating = f"generating {how_many(extra_rows, 'transaction')}"
            with counted_step(generating, extra_rows) as advance:
                generate(
                    out,
                    extra_rows,
                    seed=extra_rows,
                    id_prefix="G",
                    on_progress=advance,
                    rules=rules,
                )
        files.append(out)
    return files


def _hold_up_lock(state: Path) -> IO[str]:
    """One ``up`` per folder, from its first step: an exclusive lock on ``up.lock``, held
    while the returned file is open and released by the kernel however the process ends.
    (``up.pid`` and the endpoints file say a stack is serving; they are written late, so a
    second ``up`` started during the first one's loading and dbt used to go ahead too.)"""
    import fcntl

    handle = (state / UP_LOCK_FILE).open("a")
    for attempt in range(LOCK_ATTEMPTS):
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return handle
        except BlockingIOError:
            # Another up holds it, or a command asking `running_stack` holds it shared
            # for a moment: ask again a few times before saying it is taken.
            if attempt + 1 < LOCK_ATTEMPTS:
                time.sleep(0.05)
    handle.close()
    raise StackError("salesmart up is already starting in this folder; wait for it, or stop it")


def run_up(data: Sequence[Path] | None = None, extra_rows: int = 0, port_base: int = 8080) -> int:
    settings = cli_settings(local_run=True)
    state = ensure_state_dir(settings)
    live = running_stack(settings)
    if live:
        pid = "?"
        with contextlib.suppress(OSError):
            pid = (state / UP_PID_FILE).read_text().strip()
        raise StackError(
            f"salesmart is already running in this folder (pid {pid});"
            f" dashboard at {live.get('dashboard', '?')}"
        )
    with _hold_up_lock(state):  # released when this returns, or by the kernel
        if extra_rows < 0:
            raise StackError("--rows must be >= 0")
        check_port_base(port_base, len(FUNCTIONS))
        # Before the minute of loading and dbt that comes first, not after it.
        serving_variables(os.environ)  # the servers' WORKERS, THREADS, ... (ConfigError)
        via_make = os.environ.get(MAKE_UP_ENV) == "1"
        option = 'make up UP_ARGS="--port-base P"' if via_make else "--port-base"
        require_free_ports(range(port_base, port_base + len(FUNCTIONS)), option)
        files = _data_files(data, extra_rows, settings)
        write_private(state / UP_PID_FILE, f"{os.getpid()}\n")
        cleanups: list[Callable[[], None]] = [lambda: (state / UP_PID_FILE).unlink(missing_ok=True)]
        up_keys = share_up_keys(settings)  # the commands run beside it mask as it does
        cleanups.append(lambda: up_keys.unlink(missing_ok=True))
        try:
            return _up(settings, state, files, port_base, cleanups)
        except KeyboardInterrupt:  # before serving: the CLI then says "interrupted" (exit 130)
            say("\nstopping ...")
            raise
        finally:
            for cleanup in reversed(cleanups):
                with contextlib.suppress(Exception):
                    cleanup()
            say("stopped.")


def _up(
    settings: Settings,
    state: Path,
    files: list[Path],
    port_base: int,
    cleanups: list[Callable[[], None]],
) -> int:
    from common.pg import connect
    from pipeline.bq_emulator import bigquery_needs_emulator, start_emulator
    from pipeline.migrate import migrate

    # A database of the operator's (SALESMART_DATABASE_URL), not one `up` made for itself.
    external_database = bool(settings.database_url)
    embedded = None
    if not settings.database_url:
        from pipeline.postgres_embedded import open_embedded

        embedded = open_embedded(state / "postgres")
        cleanups.append(embedded.leave)  # first: a signal may land as join returns
        with step("starting PostgreSQL (embedded)"):
            embedded.join()
        settings = dataclasses.replace(settings, database_url=embedded.dsn)

    bq_endpoint = settings.bigquery.api_endpoint
    emulator = None
    if bigquery_needs_emulator(settings):
        with step("starting the local BigQuery stand-in"):
            emulator = start_emulator(bigquery_state_dir(settings), settings.bigquery.project)
        cleanups.append(emulator.stop)
        bq_endpoint = emulator.endpoint
        settings = dataclasses.replace(
            settings, bigquery=dataclasses.replace(settings.bigquery, api_endpoint=bq_endpoint)
        )
    if not settings.bigquery.is_emulated:
        from common.bigquery import get_client

        # Real BigQuery: its credentials and project are checked before anything is written.
        get_client(settings.bigquery)
    with step("migrating PostgreSQL"):
        conn = connect(settings.database_url)
        try:
            migrate(conn)
            admin = provision_admin(conn, settings, external_database=external_database)
        finally:
            conn.close()

    _load_and_build(settings, files)

    functions = FunctionProcesses(FUNCTIONS, port_base, function_env(settings), state / "logs")
    cleanups.append(functions.stop)
    with step("starting the four functions"):
        functions.start()
    urls = functions.urls()
    endpoints: dict[str, Any] = {
        **urls,
        "postgres": settings.database_url,
        "bigquery": bq_endpoint or "https://bigquery.googleapis.com",  # the contract: a URL
    }
    write_private(state / ENDPOINTS_FILE, json.dumps(endpoints, indent=2) + "\n")
    cleanups.append(lambda: (state / ENDPOINTS_FILE).unlink(missing_ok=True))
    announcement = _announcement(settings, state, urls, bq_endpoint, admin)
    return wait_until_stopped(functions, announcement, emulator, embedded)


def _load_and_build(settings: Settings, files: list[Path]) -> None:
    """Each file into both warehouses (what each does not hold yet), then dbt on both."""
    from pipeline import TARGETS
    from pipeline.csvsource import file_sha256
    from pipeline.ingest_bigquery import ensure_warehouse_tables
    from pipeline.landing import ingest_if_new
    from pipeline.transform import run_dbt

    ensure_warehouse_tables(settings)
    for path in files:
        digest = file_sha256(path)
        # A restart of `up` loads into each warehouse only what it does not hold yet (nor
        # re-rejects it): an earlier `up` may have been stopped between the two loads.
        for target in TARGETS:
            result = ingest_if_new(path, digest, target, settings, progress=True)
            if result is None:
                say(f"  {path} -> {target}: already loaded earlier, skipped")
            else:
                say("  " + result.summary())
    for target in TARGETS:
        with step(f"dbt build on {target}"):
            built = run_dbt(target, settings)
        if built.warned:  # the build stands; the rows a test names are worth a look
            say(f"  dbt on {target} warned: {', '.join(built.warned)}")


def _announcement(
    settings: Settings, state: Path, urls: dict[str, str], bq_endpoint: str, admin: AdminLogin
) -> list[str]:
    """What `up` prints once serving: the URLs, the services and how to log in."""
    from common.pg import parse_dsn

    pg = parse_dsn(settings.database_url)
    announcement = ["", "salesmart is up. Ctrl-C stops everything it started."]
    announcement += function_lines(urls)
    announcement.append(f"  postgres   {pg.redacted()}")
    announcement.append(
        f"  bigquery   {bq_endpoint or 'BigQuery project ' + settings.bigquery.project}"
    )
    if admin.look_alike is not None:
        announcement.append(
            f"  login      {ADMIN_USER}: not made, beside the account {admin.look_alike};"
            " log in with that one, or add another with `salesmart users add`"
        )
    elif admin.password is None:
        announcement.append(
            f"  login      {ADMIN_USER}: the account already in that database, left unchanged"
        )
        if admin.disabled:
            announcement.append(
                f"             (disabled: `salesmart users enable {ADMIN_USER}` allows its"
                " logins again)"
            )
        elif admin.other_password_in is not None:
            announcement.append(
                f"             (the password in {admin.other_password_in} does not log it in:"
                f" `salesmart users password {ADMIN_USER}` sets one)"
            )
    elif admin.unshown:
        announcement.append(
            f"  login      {ADMIN_USER} / {admin.password}   (shown once; kept in"
            f" {state / ADMIN_PASSWORD_FILE})"
        )
        # Marked before it is said: the file keeps it, and the next `up` points there.
        admin_password_shown(settings)
    elif os.environ.get(ADMIN_PASSWORD_VARIABLE):
        announcement.append(f"  login      {ADMIN_USER} / the password in SALESMART_ADMIN_PASSWORD")
    else:
        announcement.append(
            f"  login      {ADMIN_USER} / the password in {state / ADMIN_PASSWORD_FILE}"
        )
    if admin.undone:
        # up's own server: the demo account is up's, reset at each start (README).
        announcement.append(
            f"             ({' and '.join(admin.undone)}: up resets its demo account at each"
            " start; `salesmart users add` makes accounts of your own)"
        )
    announcement.append(f"  endpoints  {state / ENDPOINTS_FILE}")
    return announcement


# -- serve --------------------------------------------------------------------------------
def run_serve(functions: Sequence[str], port_base: int = 8080) -> int:
    """The functions on loopback: the local run (dev) unless ``SALESMART_ENV`` names a
    deployment, whose secrets, database and settings it must then be given, as a pod is."""
    from common.config import require_database
    from pipeline.runtime import deployment, postgres_dsn

    functions = list(dict.fromkeys(functions))
    # Each function keeps its slot (dashboard is base + 3 when served alone too).
    check_port_base(port_base, 1 + max(FUNCTIONS.index(name) for name in functions))
    serving_variables(os.environ)  # as the servers will read them: one line here, not four logs
    local = not deployment()
    settings = cli_settings(local_run=local)
    if not local:
        settings.require_secrets()  # one line here, not one refusal per function
        if set(functions) - {"trends_bq"}:  # the others use PostgreSQL: the functions' rule
            require_database(settings)
    with postgres_dsn(settings, local_run=local) as dsn:
        settings = dataclasses.replace(settings, database_url=dsn)
        processes = FunctionProcesses(
            functions,
            port_base,
            function_env(settings, dev=local),
            # Apart from `up`'s (one folder may run both): which served a line is then clear.
            ensure_state_dir(settings) / "logs" / "serve",
        )
        try:
            processes.start()
            announcement = [*function_lines(processes.urls()), "serving; Ctrl-C stops."]
            return wait_until_stopped(processes, announcement)
        finally:
            processes.stop()
