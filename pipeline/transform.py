"""``salesmart transform``: ``dbt build`` of ``dbt/`` on PostgreSQL or BigQuery.

dbt lives in its own environment (``.venv-dbt``, see the Makefile), so it runs as a
subprocess: ``SALESMART_DBT`` names the executable, else ``REPO_ROOT/.venv-dbt/bin/dbt``.
Every connection value reaches ``dbt/profiles.yml`` through the environment, built here
from the settings; secrets travel as ``DBT_ENV_SECRET_*`` (dbt scrubs those from its logs)
and are scrubbed again from anything this module prints or raises. dbt never sees the JWT
or PII keys: ids are masked at ingest.

Each run writes its artifacts and logs under one work directory per target
(``.salesmart/dbt/<target>/`` by default), locked while dbt runs, so concurrent runs on
different targets or work directories never clash and the partial-parse cache survives
between runs of one target.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import json
import os
import re
import signal
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.config import (
    REPO_ROOT,
    BigQuerySettings,
    ConfigError,
    Settings,
    ValidationRules,
    without_secrets,
)
from common.pg import LIBPQ_ENVIRONMENT, libpq_ssl_options, parse_dsn
from common.process import WATCHED_PARENT_ENV, stop_group, watched_by_parent
from common.wording import how_many

# SALESMART_HOME: where an image keeps the project's files when the package is installed
# (the Airflow image); a checkout needs nothing.
PROJECT_DIR = Path(os.environ.get("SALESMART_HOME") or REPO_ROOT) / "dbt"
EXECUTABLE_ENV = "SALESMART_DBT"
DEFAULT_EXECUTABLE = REPO_ROOT / ".venv-dbt" / "bin" / "dbt"
DEFAULT_TIMEOUT_SECONDS = 1800.0
DBT_STOP_GRACE_SECONDS = 15.0  # to cancel its warehouse queries when interrupted
#: The placeholder token dbt-bigquery sends to the local stand-in (which ignores it).
EMULATOR_TOKEN = "fake-token"  # noqa: S105 - not a secret  # nosec B105
_TAIL_LINES = 40
_FAILED = ("error", "fail", "runtime error")


class TransformError(RuntimeError):
    """dbt could not run or did not succeed; the message is one line for the user."""


@dataclass(frozen=True)
class TransformResult:
    target: str
    command: str
    success: bool
    duration_seconds: float
    models: int = 0
    data_tests: int = 0
    unit_tests: int = 0
    skipped: int = 0
    warnings: int = 0
    warned: tuple[str, ...] = ()  # which nodes warned, as ``failed`` names failures
    failed: tuple[str, ...] = ()
    work_dir: Path = field(default_factory=Path)

    @property
    def tests(self) -> int:
        return self.data_tests + self.unit_tests

    def summary(self) -> str:
        text = (
            f"{self.models} models, {self.data_tests} data tests, {self.unit_tests} unit tests"
            f" in {self.duration_seconds:.1f} s"
        )
        if self.warnings:
            text += f", {how_many(self.warnings, 'warning')}"
            if self.warned:
                text += f" ({', '.join(self.warned)})"
        if self.failed:
            text += f"; failed: {', '.join(self.failed)}"
        return text

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "command": self.command,
            "success": self.success,
            "duration_seconds": round(self.duration_seconds, 3),
            "models": self.models,
            "data_tests": self.data_tests,
            "unit_tests": self.unit_tests,
            "skipped": self.skipped,
            "warnings": self.warnings,
            "warned": list(self.warned),
            "failed": list(self.failed),
        }


def dbt_executable() -> Path:
    return Path(os.environ.get(EXECUTABLE_ENV) or DEFAULT_EXECUTABLE)


def default_work_dir(target: str, settings: Settings) -> Path:
    return settings.state_dir / "dbt" / target


def dbt_environment(target: str, settings: Settings) -> tuple[dict[str, str], list[str]]:
    """The child's environment for ``target`` and the secret values it carries."""
    env = without_secrets(os.environ)
    env.update({"DO_NOT_TRACK": "1", "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"})
    env.update(_rules_env(settings.validation))
    if target == "postgres":
        env.update(_postgres_env(settings, env))
        password = env["DBT_ENV_SECRET_PG_PASSWORD"]
        return env, [password] if password else []
    if target == "bigquery":
        env.update(_bigquery_env(settings.bigquery))
        return env, []
    raise TransformError(f"unknown dbt target {target!r}; expected postgres or bigquery")


def _rules_env(rules: ValidationRules) -> dict[str, str]:
    """The loading rules, for the staging test that warns about rows no loader would accept
    (macros/loading_rules.sql): one set of thresholds, the configuration's."""
    return {
        "SALESMART_RULE_PRODUCT_PREFIX": rules.product_prefix,
        # The minimum rounded up to the decimals a price may have (at most 9, as NUMERIC's
        # scale), written out (YAML's 1e2 is Decimal 1E+2): the rule takes a plain decimal.
        "SALESMART_RULE_LOWEST_PRICE": format(rules.lowest_price, "f"),
        "SALESMART_RULE_MAX_DECIMALS": str(rules.max_decimals),
        "SALESMART_RULE_MAX_QUANTITY": str(rules.max_quantity),
    }


#: A URL's parameters dbt is not given: its name (dbt sets its own), the liveness of a
#: long-held socket (libpq has no variable for these: they are for the functions' pools
#: and the commands' connections), the encoding (the rows are UTF-8). Its connect timeout
#: goes through the profile, which takes the URL's.
_DBT_OWN_CONNECTION = frozenset(
    {
        "application_name",
        "client_encoding",
        "fallback_application_name",
        "connect_timeout",
        "keepalives",
        "keepalives_idle",
        "keepalives_interval",
        "keepalives_count",
        "tcp_user_timeout",
    }
)


#: How long one of dbt's statements waits for a lock on PostgreSQL (see ``_postgres_env``):
#: below the functions' STATEMENT_TIMEOUT_MS (2.5 s), so a reader queued behind a swap
#: that cannot get its lock still answers.
DBT_LOCK_TIMEOUT_MS = 2000


def _postgres_env(settings: Settings, environ: Mapping[str, str]) -> dict[str, str]:
    """The PostgreSQL profile's settings (the password from ``environ``'s PGPASSWORD when
    the URL has none)."""
    if not settings.database_url:
        raise TransformError(
            "no PostgreSQL to transform: set SALESMART_DATABASE_URL or run 'salesmart up'"
        )
    try:
        pg = parse_dsn(settings.database_url)
    except ConfigError as exc:
        raise TransformError(str(exc)) from None
    # TLS as for every other connection (common.pg): the mode in the profile, the
    # certificate files and the URL's other parameters through libpq's own variables
    # (PGSSLROOTCERT, PGOPTIONS, ...), which it reads for what dbt does not pass itself.
    ssl = libpq_ssl_options(pg)
    libpq: dict[str, str] = {}
    for name, value in (*ssl.items(), *pg.other):
        if name == "sslmode" or name in _DBT_OWN_CONNECTION:
            continue
        if name not in LIBPQ_ENVIRONMENT:
            raise TransformError(
                f"SALESMART_DATABASE_URL names {name}=, which dbt cannot be given (libpq"
                " has no environment variable for it): connect without it for dbt"
            )
        libpq[LIBPQ_ENVIRONMENT[name]] = value
    # dbt swaps a rebuilt mart in (ALTER TABLE ... RENAME) under ACCESS EXCLUSIVE, queued
    # behind any reader, and every new reader queues behind it: one long report held
    # trends_pg and the dashboard at 503 for as long as it read. Each of dbt's waits for a
    # lock is bounded below the functions' statement timeout; the build fails instead
    # ("lock timeout", and a run again or the DAG's retry). The URL's options come after:
    # its own lock_timeout wins.
    own = f"-c lock_timeout={DBT_LOCK_TIMEOUT_MS}"
    given = libpq.get("PGOPTIONS") or environ.get("PGOPTIONS", "")
    libpq["PGOPTIONS"] = f"{own} {given}".strip()
    return {
        **libpq,
        "SALESMART_PG_CONNECT_TIMEOUT": dict(pg.other).get("connect_timeout", "10"),
        "SALESMART_PG_HOST": pg.host,
        "SALESMART_PG_PORT": str(pg.port),
        "SALESMART_PG_USER": pg.user,
        "SALESMART_PG_DBNAME": pg.database,
        "SALESMART_PG_SSLMODE": ssl["sslmode"],
        # The profile always hands libpq a password, and libpq reads PGPASSWORD only when
        # none is given (an empty one too): a URL without one takes PGPASSWORD's here, as
        # every other connection does. .pgpass still works (libpq reads it for an empty one).
        "DBT_ENV_SECRET_PG_PASSWORD": pg.password_or_env(environ),
        "SALESMART_PG_RAW_SCHEMA": settings.raw_schema,
        "SALESMART_PG_MART_SCHEMA": settings.mart_schema,
    }


def _bigquery_env(bq: BigQuerySettings) -> dict[str, str]:
    """The BigQuery profile's settings: the stand-in's endpoint, or real BigQuery's ADC."""
    env = {
        "SALESMART_BQ_PROJECT": bq.project,
        "SALESMART_BQ_LOCATION": bq.location,
        "SALESMART_BQ_WAREHOUSE_DATASET": bq.warehouse_dataset,
        "SALESMART_BQ_MART_DATASET": bq.mart_dataset,
    }
    if bq.is_emulated:
        # The local stand-in: its own endpoint, and any bearer token (it checks none).
        return {
            **env,
            "SALESMART_DBT_BQ_METHOD": "oauth-secrets",
            "DBT_ENV_SECRET_BQ_TOKEN": EMULATOR_TOKEN,
            "SALESMART_BQ_ENDPOINT": bq.api_endpoint,
        }
    # Real BigQuery: Application Default Credentials, which also read the service-account
    # file named by GOOGLE_APPLICATION_CREDENTIALS.
    env.update(
        {
            "SALESMART_DBT_BQ_METHOD": "oauth",
            "DBT_ENV_SECRET_BQ_TOKEN": "",  # nosec B105 - empty: the profile names it, oauth ignores it
            "SALESMART_BQ_ENDPOINT": "",
        }
    )
    if bq.credentials_file:  # absolute (settings): dbt runs in a folder of its own
        env["GOOGLE_APPLICATION_CREDENTIALS"] = bq.credentials_file
    return env


#: A secret this long is starred wherever it appears; a shorter one (a local test password
#: such as ``1``) only where it stands alone, or dbt's reason would lose its host and port.
_SCRUB_ANYWHERE_BYTES = 8


def _scrub(text: str, secrets: Sequence[str]) -> str:
    """``text`` with each secret, and the forms a URL or a driver may give it, starred."""
    for secret in secrets:
        encoded = (
            urllib.parse.quote(secret, safe=""),
            urllib.parse.quote(secret),
            urllib.parse.quote_plus(secret),
        )
        lower_hex = (re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), e) for e in encoded)
        for form in dict.fromkeys((secret, *encoded, *lower_hex)):
            if len(form.encode()) >= _SCRUB_ANYWHERE_BYTES:
                text = text.replace(form, "*****")
            else:
                text = re.sub(rf"(?<![\w.-]){re.escape(form)}(?![\w.-])", "*****", text)
    return text


@contextlib.contextmanager
def _locked(work_dir: Path, target: str) -> Iterator[None]:
    """One dbt at a time per work directory (its target/ and logs/ are shared)."""
    # The owner's only, as the rest of .salesmart/: compiled SQL and dbt's log lines.
    work_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    work_dir.chmod(0o700)  # also one made before (0755), whose files stay as they were
    from common.local_run import open_private

    with open_private(work_dir / ".lock") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise TransformError(
                f"another dbt run on {target} is using {work_dir}; wait for it to finish"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _node_name(unique_id: str) -> str:
    """``model.salesmart.pg_sales`` -> ``pg_sales``; ``test.salesmart.<name>.<hash>`` ->
    ``<name>``; ``unit_test.salesmart.<model>.<name>`` -> ``<model>::<name>`` (as dbt
    prints them)."""
    parts = unique_id.split(".")
    if parts[0] == "test" and len(parts) >= 4:
        return parts[2]
    if parts[0] == "unit_test" and len(parts) >= 4:
        return f"{parts[2]}::{parts[3]}"
    return parts[-1]


def _describe_failure(result: dict[str, Any], kind: str, status: str) -> str:
    text = f"{kind} {_node_name(str(result.get('unique_id', '')))} ({status}"
    failures = result.get("failures")
    if kind == "test" and isinstance(failures, int) and failures > 0:
        text += f", {how_many(failures, 'row')}"
    elif status == "error":
        cause = _server_message(str(result.get("message") or ""))
        if cause:
            from pipeline.migrate import not_migrated_hint

            text += f": {not_migrated_hint(cause)}"
    return text + ")"


def _server_message(message: str) -> str:
    """The database's own reason in a dbt node error (``Database Error in model m (path)``,
    then the server's message): "permission denied for schema public" belongs on the
    command's line, not only in dbt.log. Never the SQL (``LINE n:``, compiled code)."""
    lines = [line.strip() for line in message.splitlines()]
    for line in lines[1:]:
        if line and not line.startswith(("LINE ", "compiled code", "^", "HINT")):
            return line[:200]
    return ""


def _read_results(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    results = data.get("results") if isinstance(data, dict) else None
    return [r for r in results or [] if isinstance(r, dict)]


def _error_lines(lines: Sequence[str]) -> str:
    """dbt's own one-line reason from the tail of its output, when there is one."""
    interesting = [
        line.strip()
        for line in lines
        if any(
            word in line
            for word in ("Error", "error:", "Could not", "could not", "failed", "refused")
        )
        and not line.strip().startswith("Encountered an error")  # a header, not a reason
    ]
    if not interesting:
        interesting = [line.strip() for line in lines if line.strip()][-1:]
    text = " | ".join(dict.fromkeys(interesting))  # de-duplicated, in order
    return text[:500]


def _strip_timestamp(line: str) -> str:
    # dbt's text log lines start with "HH:MM:SS  ".
    head, sep, rest = line.partition("  ")
    return rest if sep and len(head) == 8 and head.count(":") == 2 else line


def run_dbt(
    target: str,
    settings: Settings,
    *,
    command: str = "build",
    select: str | Sequence[str] | None = None,
    work_dir: Path | None = None,
    on_line: Callable[[str], None] | None = None,
    timeout: float | None = DEFAULT_TIMEOUT_SECONDS,
    check: bool = True,
    extra_args: Sequence[str] = (),
) -> TransformResult:
    """Run ``dbt <command>`` on ``target`` (``postgres`` or ``bigquery``).

    ``select`` narrows the nodes (dbt selection syntax); ``work_dir`` holds dbt's
    ``target/`` and ``logs/`` (default ``<state_dir>/dbt/<target>``); ``on_line`` gets each
    line of dbt's output (scrubbed of secrets) for progress. Returns the counts from
    ``run_results.json``; with ``check`` (the default) a failure raises
    :class:`TransformError` naming the failing nodes instead of returning.
    """
    exe = dbt_executable()
    if not exe.exists():
        raise TransformError(f"dbt is not installed ({exe} is missing); run 'make install'")
    env, secrets = dbt_environment(target, settings)
    work = (work_dir or default_work_dir(target, settings)).resolve()
    artifacts = work / "target"
    args = _dbt_args(exe, command, target, work, artifacts, select, extra_args)

    tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
    with _locked(work, target):
        with contextlib.suppress(FileNotFoundError):
            (artifacts / "run_results.json").unlink()
        started = time.monotonic()
        stand_in = settings.bigquery.api_endpoint if target == "bigquery" else ""
        returncode, stopped, refused = _run(
            args, env, work, secrets, tail, on_line, timeout, stand_in
        )
        duration = time.monotonic() - started
        results = _read_results(artifacts / "run_results.json")

    finished = returncode == 0 and not stopped
    outcome = _outcome(results, secrets, target, command, work, duration, finished=finished)
    if outcome.success or not check:
        return outcome
    if stopped:
        reason = stopped
    elif outcome.failed:
        reason = _failed_nodes(outcome.failed, len(results))
    elif refused:  # dbt gave up on its own, no node's reason: its last lines are urllib3's
        reason = refused
    else:
        reason = f"exited with code {returncode}: {_error_lines(tail) or 'no output'}"
    # Only what came from dbt is scrubbed: a password that is also a word ("postgres") must
    # not star out the target's name or the log's path in our own words.
    where = f"(log: {work / 'logs' / 'dbt.log'})"
    raise TransformError(f"dbt {command} on {target} {_scrub(reason, secrets)} {where}")


def _dbt_args(
    exe: Path,
    command: str,
    target: str,
    work: Path,
    artifacts: Path,
    select: str | Sequence[str] | None,
    extra_args: Sequence[str],
) -> list[str]:
    """dbt's command line: the project's profile, artifacts and logs under ``work``."""
    selected = [] if not select else [select] if isinstance(select, str) else list(select)
    return [
        str(exe),
        command,
        "--project-dir",
        str(PROJECT_DIR),
        "--profiles-dir",
        str(PROJECT_DIR),
        "--target",
        target,
        "--target-path",
        str(artifacts),
        "--log-path",
        str(work / "logs"),
        "--no-use-colors",
        "--no-send-anonymous-usage-stats",
        *(["--select", *selected] if selected else []),
        *extra_args,
    ]


def _failed_nodes(failed: Sequence[str], total: int) -> str:
    """``2 of 30 nodes failed: a, b`` (the first eight named)."""
    shown = ", ".join(failed[:8]) + (f" and {len(failed) - 8} more" if len(failed) > 8 else "")
    return f"{len(failed)} of {total} nodes failed: {shown}"


def _outcome(
    results: list[dict[str, Any]],
    secrets: Sequence[str],
    target: str,
    command: str,
    work: Path,
    duration: float,
    *,
    finished: bool,
) -> TransformResult:
    """What ``run_results.json`` says: counts by kind, the nodes that warned or failed
    (described, secrets starred); ``success`` when dbt ``finished`` (exit 0, in time) and
    no node failed."""
    counts: collections.Counter[str] = collections.Counter()
    failed: list[str] = []
    warned: list[str] = []
    for result in results:
        # Starred before _server_message shortens it: a cut could leave half a password.
        result = {**result, "message": _scrub(str(result.get("message") or ""), secrets)}
        unique_id = str(result.get("unique_id", ""))
        kind = unique_id.split(".", 1)[0]
        status = str(result.get("status", "")).lower()
        counts[kind] += 1
        if status == "skipped":
            counts["skipped"] += 1
        elif status == "warn":
            counts["warn"] += 1
            warned.append(_describe_failure(result, kind, status))
        elif status in _FAILED:
            failed.append(_describe_failure(result, kind, status))
    return TransformResult(
        target=target,
        command=command,
        success=finished and not failed,
        duration_seconds=duration,
        models=counts["model"],
        data_tests=counts["test"],
        unit_tests=counts["unit_test"],
        skipped=counts["skipped"],
        warnings=counts["warn"],
        warned=tuple(warned),
        failed=tuple(failed),
        work_dir=work,
    )


def _finish_stopping(timer: threading.Thread, process: subprocess.Popen[str]) -> None:
    """Wait for the timer's (or the stand-in watch's) stop of dbt's group: dbt itself may
    be gone while its children have the rest of the grace (the caller ending first left
    them running). Interrupted meanwhile, what is left of the group is killed at once."""
    try:
        timer.join()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        raise


class _StandInWatch(threading.Thread):
    """Stops dbt (as by Ctrl-C) once the BigQuery stand-in it was given has refused
    connections for ``STAND_IN_GONE_SECONDS``: `up`'s stand-in ends with `up`, and dbt
    retried its jobs for their whole timeout (a transform beside `up` sat silent for 20
    minutes, then blamed two tests). A stand-in `up` restarts is back well within it."""

    def __init__(self, endpoint: str, process: subprocess.Popen[str]) -> None:
        super().__init__(name="stand-in-watch", daemon=True)
        parts = urllib.parse.urlsplit(endpoint)
        self.address = (
            parts.hostname or "127.0.0.1",
            parts.port or (443 if parts.scheme == "https" else 80),
        )
        self.process = process
        self.done = threading.Event()
        self.gone = False
        #: It refused a connection at least once: a dbt that failed meanwhile failed on it.
        self.refused = False

    def run(self) -> None:
        import socket

        refused_since: float | None = None
        while not self.done.wait(1.0):
            try:
                socket.create_connection(self.address, timeout=1.0).close()
                refused_since = None
            except OSError:
                self.refused = True
                refused_since = refused_since or time.monotonic()
                if time.monotonic() - refused_since >= STAND_IN_GONE_SECONDS:
                    self.gone = True
                    stop_group(self.process, DBT_STOP_GRACE_SECONDS, signal.SIGINT)
                    return


#: How long the BigQuery stand-in may refuse connections before dbt is stopped.
STAND_IN_GONE_SECONDS = 10.0


def _run(
    args: list[str],
    env: dict[str, str],
    cwd: Path,
    secrets: Sequence[str],
    tail: collections.deque[str],
    on_line: Callable[[str], None] | None,
    timeout: float | None,
    stand_in: str = "",
) -> tuple[int, str, str]:
    """Run dbt in its own process group, streaming its output; (returncode, why it was
    stopped, and what the stand-in did meanwhile if dbt failed: "" when nothing).
    ``stand_in``: the BigQuery stand-in's endpoint, watched."""
    try:
        process = subprocess.Popen(
            # A killed starter (kill -9 of `up`) leaves no dbt running on: it is asked to
            # stop as by Ctrl-C once its parent is gone.
            watched_by_parent(args, signal.SIGINT, DBT_STOP_GRACE_SECONDS),
            cwd=cwd,
            env={**env, WATCHED_PARENT_ENV: str(os.getpid())},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            encoding="utf-8",
            errors="replace",
            start_new_session=True,
            umask=0o077,  # what dbt writes (target/, logs/) is the owner's only
        )
    except OSError as exc:
        raise TransformError(f"cannot run dbt {args[0]}: {exc.strerror}") from None

    timed_out = threading.Event()

    def _stop() -> None:
        # Out of time: stopped as by Ctrl-C too, so that dbt cancels its warehouse queries
        # (killed outright, it left them running, holding their locks); killed if it lingers.
        timed_out.set()
        stop_group(process, DBT_STOP_GRACE_SECONDS, signal.SIGINT)

    timer = threading.Timer(timeout, _stop) if timeout else None
    if timer:
        timer.daemon = True
        timer.start()
    watch = _StandInWatch(stand_in, process) if stand_in else None
    if watch:
        watch.start()
    try:
        assert process.stdout is not None
        for raw in process.stdout:
            line = _scrub(_strip_timestamp(raw.rstrip("\n")), secrets)
            tail.append(line)
            if on_line:
                on_line(line)
        returncode = process.wait()
    except BaseException:
        # Ctrl-C or a failing callback: never leave dbt running behind us. Asked as by
        # Ctrl-C first, dbt cancels the queries it has running in the warehouse (a killed
        # dbt leaves them to run on, holding their locks); killed if it does not end.
        stop_group(process, DBT_STOP_GRACE_SECONDS, signal.SIGINT)
        raise
    finally:
        if timer:
            timer.cancel()
            if timed_out.is_set():
                _finish_stopping(timer, process)
        if watch:
            watch.done.set()
            if watch.gone:
                _finish_stopping(watch, process)
    if timed_out.is_set():
        return returncode, f"did not finish within {timeout:.0f} s", ""
    if watch and watch.gone:
        gone = (
            f"was stopped: the BigQuery stand-in at {stand_in} stopped answering"
            " (stopped with the `salesmart up` it belongs to, or crashed: its log is"
            " bqemulator.log in its folder)"
        )
        return returncode, gone, ""
    if watch and watch.refused and returncode != 0:
        return (
            returncode,
            "",
            (
                f"failed: the BigQuery stand-in at {stand_in} refused connections meanwhile"
                " (restarted by `salesmart up`, stopped with it, or crashed: its log is"
                " bqemulator.log in its folder); run it again"
            ),
        )
    return returncode, "", ""
