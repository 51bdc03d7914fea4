"""The one way into BigQuery: real BigQuery, or the local stand-in, behind the same calls.

- One client per process (and per settings), created lazily under a lock, recreated after
  ``fork`` (gunicorn imports modules in the master); ``google.cloud.bigquery`` is imported
  here only, and only when first needed.
- Real BigQuery (``api_endpoint`` empty): project and location from settings;
  credentials from the file in ``GOOGLE_APPLICATION_CREDENTIALS`` (any kind ADC accepts:
  service account, workload identity) or else Application Default Credentials.
- The stand-in (``SALESMART_BQ_ENDPOINT=http://127.0.0.1:P``): anonymous credentials,
  ``client_options.api_endpoint``.
- Every query is parameterized and carries ``maximum_bytes_billed``, a server-side job
  timeout, a client-side deadline (``query_timeout_seconds``: no hang) and the labels
  ``function`` / ``user``. Rows come back as plain dicts.
- Unreachable, timed out, 5xx, quota, credentials, and a missing mart raise
  :class:`BigQueryUnavailable` (a ``common.errors.WarehouseUnavailable``: 503). Nothing is
  cached on failure, so the next call tries again: recovery needs no restart.

Stand-in (bqemulator 1.4.0) gaps handled here, so callers never see them:
- jobs.query answers a failed query with HTTP 200 and the error in the body, which
  ``query_and_wait`` reads as "no rows": on the stand-in queries go through jobs.insert;
- query parameters are not passed to multi-statement scripts (``run_script`` takes none);
- a missing dataset may come back as 403 "... or perhaps it does not exist", not 404;
- ``DATE_TRUNC(col, MONTH)`` is typed DATETIME (``summary_row`` returns dates anyway);
- NUMERIC comes back with scale 9 (equal values; callers round for display);
- a load job's ``outputRows`` after an append is the table's total (``load_file`` returns
  nothing; count instead); job labels and ``maximumBytesBilled`` are accepted but not
  enforced or recorded; ``total_bytes_processed`` is 0.
One gap callers do see: its ``CREATE OR REPLACE TABLE`` (dbt's table materialization) is not
atomic, so a query during ``salesmart transform --target bigquery`` may find no mart for a
moment and answer 503 (``not_built``, seen: 2 of 290 requests at c=2). On BigQuery the
replacement is atomic; PostgreSQL's rebuild under load answered every request.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import os
import re
import sys
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from common.config import (
    BQ_NAME,
    BQ_PROJECT_ID,
    LOCAL_PROJECT,
    BigQuerySettings,
    ConfigError,
    get_settings,
)
from common.errors import WarehouseUnavailable
from common.logging import log_event
from common.trends import COMPARISONS, INT64_MAX, ORDER_BY, SUMMARY_COLUMNS, TrendFilters

if TYPE_CHECKING:
    from google.cloud import bigquery


SCOPES = ("https://www.googleapis.com/auth/bigquery",)
SUMMARY_TABLE = "summary_sales"
LABEL_MAX = 63
NUMERIC_MAX = Decimal("99999999999999999999999999999.999999999")
#: Connection refused/reset is retried this many times (100 ms, 200 ms) before giving up:
#: an unreachable warehouse answers 503 at once instead of after the whole deadline.
CONNECTION_RETRIES = 2

_LABEL_BAD = re.compile(r"[^a-z0-9_-]+", re.ASCII)


class BigQueryUnavailable(WarehouseUnavailable):
    """BigQuery cannot answer now. ``reason`` is a short code for logs and metrics.

    Codes: ``unreachable``, ``timeout``, ``server_error``, ``not_built`` (the dataset or
    table does not exist: run ``salesmart transform``), ``access_denied``,
    ``credentials``, ``quota``, ``bytes_billed_limit``.
    ``message`` (what an HTTP client sees) stays the generic, client-safe sentence;
    ``str()`` carries the diagnostic for logs and the CLI.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__()
        self.warehouse = "bigquery"
        self.reason = reason
        self.detail = _one_line(detail)
        self.operation: str | None = None  # set where raised: "query", "create dataset"...

    def __str__(self) -> str:
        during = f", {self.operation}" if self.operation else ""
        text = f"BigQuery unavailable ({self.reason}{during})"
        return f"{text}: {self.detail}" if self.detail else text


# -- the client ----------------------------------------------------------------------------
_lock = threading.Lock()
_clients: dict[BigQuerySettings, bigquery.Client] = {}
_clients_pid = os.getpid()


def _settings(settings: BigQuerySettings | None) -> BigQuerySettings:
    return settings if settings is not None else get_settings().bigquery


def _credentials(bq: BigQuerySettings) -> Any:
    if bq.is_emulated:
        from google.auth.credentials import AnonymousCredentials

        return AnonymousCredentials()  # type: ignore[no-untyped-call]
    import google.auth

    if bq.credentials_file:
        path = Path(bq.credentials_file)
        if not path.is_file():
            raise BigQueryUnavailable(
                "credentials", f"GOOGLE_APPLICATION_CREDENTIALS={path} is not a readable file"
            )
        # The generic loader (any ADC file type) warns about files from untrusted sources;
        # this one is the operator's own mount.
        credentials, _ = google.auth.load_credentials_from_file(  # type: ignore[no-untyped-call]
            str(path), scopes=SCOPES
        )
        return credentials
    from google.auth.exceptions import DefaultCredentialsError

    try:
        credentials, _ = google.auth.default(scopes=SCOPES)
    except DefaultCredentialsError:
        # Said in our words: Google's names no setting of ours. A configuration copied from
        # elsewhere names a real project, and the local run then wants real BigQuery.
        raise BigQueryUnavailable(
            "credentials",
            f"no Google credentials were found for the BigQuery project {bq.project}"
            " (GOOGLE_APPLICATION_CREDENTIALS, or `gcloud auth application-default login`);"
            f" the local stand-in is used for the project {LOCAL_PROJECT}"
            " (data_warehouse.project_id, SALESMART_BQ_PROJECT)",
        ) from None
    return credentials


def _new_client(bq: BigQuerySettings) -> bigquery.Client:
    _check_project(bq.project)
    if not bq.is_emulated and bq.project == LOCAL_PROJECT:
        # The placeholder names no real project: queries would go nowhere (a key file's own
        # project is not used: which project is billed must be said, not guessed).
        raise BigQueryUnavailable(
            "credentials",
            "no BigQuery project is set: set SALESMART_BQ_PROJECT (or GOOGLE_CLOUD_PROJECT)",
        )
    from google.cloud import bigquery as bqlib

    options = {"api_endpoint": bq.api_endpoint} if bq.is_emulated else None
    try:
        return bqlib.Client(
            project=bq.project,
            location=bq.location,
            credentials=_credentials(bq),
            client_options=options,
        )
    except BigQueryUnavailable:
        raise
    except Exception as exc:
        mapped = _map_error(exc)
        if mapped is None:
            mapped = BigQueryUnavailable("credentials", f"{type(exc).__name__}: {exc}")
        raise mapped from exc


def get_client(settings: BigQuerySettings | None = None) -> bigquery.Client:
    """The process's client for these settings (created on first use, thread-safe)."""
    global _clients_pid
    bq = _settings(settings)
    with _lock:
        if _clients_pid != os.getpid():  # forked: never share a connection pool
            _clients.clear()
            _clients_pid = os.getpid()
        client = _clients.get(bq)
        if client is None:
            client = _new_client(bq)
            _clients[bq] = client
        return client


def reset_clients() -> None:
    """Forget the cached clients (tests; a changed configuration)."""
    with _lock:
        for client in _clients.values():
            try:
                client.close()  # type: ignore[no-untyped-call]
            except Exception:  # noqa: S112 - closing is best effort  # nosec B112
                continue
        _clients.clear()


# -- names, labels, parameters -------------------------------------------------------------
def _check_project(project: str) -> str:
    if not BQ_PROJECT_ID.fullmatch(project):
        raise ConfigError(f"BigQuery project id {project!r} is not valid")
    return project


def _check_name(name: str, what: str) -> str:
    if not BQ_NAME.fullmatch(name):
        raise ConfigError(f"BigQuery {what} name {name!r} is not valid")
    return name


def table_ref(dataset: str, table: str, settings: BigQuerySettings | None = None) -> str:
    """A checked, backquoted ``project.dataset.table`` for SQL text."""
    bq = _settings(settings)
    return (
        f"`{_check_project(bq.project)}.{_check_name(dataset, 'dataset')}."
        f"{_check_name(table, 'table')}`"
    )


def table_id(dataset: str, table: str, settings: BigQuerySettings | None = None) -> str:
    """``project.dataset.table`` for API calls (load jobs, table metadata)."""
    bq = _settings(settings)
    return (
        f"{_check_project(bq.project)}.{_check_name(dataset, 'dataset')}."
        f"{_check_name(table, 'table')}"
    )


def label_value(value: str) -> str:
    """A string made valid as a BigQuery label: lowercase ``[a-z0-9_-]``, at most 63 chars."""
    cleaned = _LABEL_BAD.sub("_", value.strip().lower()).strip("_")
    return cleaned[:LABEL_MAX]


def job_labels(function: str, user: str | None = None) -> dict[str, str]:
    labels = {"app": "salesmart", "function": label_value(function) or "unknown"}
    if user:
        labels["user"] = label_value(user) or "unknown"
    return labels


@dataclass(frozen=True, slots=True)
class Param:
    """A query parameter with an explicit type (needed for NULL, NUMERIC, TIMESTAMP...)."""

    type: str
    value: Any


ParamValue = str | int | bool | float | Decimal | date | Param | None


def _query_parameter(name: str, value: ParamValue) -> Any:
    from google.cloud import bigquery as bqlib

    if isinstance(value, Param):
        kind, raw = value.type, value.value
    elif isinstance(value, bool):
        kind, raw = "BOOL", value
    elif isinstance(value, int):
        kind, raw = "INT64", value
    elif isinstance(value, float):
        kind, raw = "FLOAT64", value
    elif isinstance(value, Decimal):
        kind, raw = "NUMERIC", value
    elif isinstance(value, datetime):
        kind, raw = "TIMESTAMP", value
    elif isinstance(value, date):
        kind, raw = "DATE", value
    elif isinstance(value, str):
        kind, raw = "STRING", value
    else:
        raise TypeError(f"parameter {name}: give a Param(type, value) for {value!r}")
    return bqlib.ScalarQueryParameter(name, kind, raw)


# -- errors --------------------------------------------------------------------------------
def _one_line(text: str) -> str:
    return " ".join(str(text).split())[:500]


def _error_reason(exc: Any) -> str:
    try:
        return str(exc.errors[0].get("reason", ""))
    except (AttributeError, IndexError, TypeError, KeyError):
        return ""


def _map_error(exc: BaseException) -> BigQueryUnavailable | None:
    """The ``BigQueryUnavailable`` an exception means, or None (a bug: let it surface)."""
    import requests
    from google.api_core import exceptions as gexc
    from google.auth import exceptions as auth_exc

    if isinstance(exc, BigQueryUnavailable):
        return exc
    if isinstance(exc, gexc.RetryError):
        cause = exc.cause
        if cause is not None and cause is not exc:
            mapped = _map_error(cause)
            if mapped is not None and mapped.reason != "timeout":
                return mapped
        return BigQueryUnavailable("timeout", str(exc))
    detail = f"{type(exc).__name__}: {getattr(exc, 'message', None) or exc}"
    reason = _error_reason(exc)
    if isinstance(exc, concurrent.futures.TimeoutError | TimeoutError | requests.Timeout):
        return BigQueryUnavailable("timeout", detail)
    if isinstance(exc, gexc.DeadlineExceeded | gexc.GatewayTimeout) or reason in (
        "timeout",
        "jobTimeout",
    ):
        return BigQueryUnavailable("timeout", detail)
    if isinstance(exc, requests.ConnectionError | ConnectionError | auth_exc.TransportError):
        return BigQueryUnavailable("unreachable", detail)
    if isinstance(exc, auth_exc.DefaultCredentialsError | auth_exc.RefreshError):
        return BigQueryUnavailable("credentials", detail)
    if isinstance(exc, gexc.TooManyRequests) or reason in ("rateLimitExceeded", "quotaExceeded"):
        return BigQueryUnavailable("quota", detail)
    if isinstance(exc, gexc.ServerError):
        return BigQueryUnavailable("server_error", detail)
    if reason == "bytesBilledLimitExceeded":
        return BigQueryUnavailable("bytes_billed_limit", detail)
    if isinstance(exc, gexc.NotFound):
        return BigQueryUnavailable("not_built", detail)
    if isinstance(exc, gexc.Forbidden):
        # The stand-in answers 403 for a dataset that does not exist; real BigQuery does
        # too for tables the caller cannot see ("or perhaps it does not exist").
        if "does not exist" in str(exc):
            return BigQueryUnavailable("not_built", detail)
        return BigQueryUnavailable("access_denied", detail)
    if isinstance(exc, gexc.Unauthorized):
        return BigQueryUnavailable("credentials", detail)
    return None


def _raise_mapped(exc: Exception, what: str) -> None:
    mapped = _map_error(exc)
    if mapped is None:
        return
    if mapped.operation is None:
        mapped.operation = what
    raise mapped from exc


def _retry_policy(deadline: float) -> Any:
    """Retry transient errors within ``deadline``; connection failures only briefly."""
    import requests
    from google.api_core.retry import Retry
    from google.cloud.bigquery.retry import DEFAULT_RETRY

    base_predicate = DEFAULT_RETRY._predicate
    connection_failures = 0

    def predicate(exc: Exception) -> bool:
        nonlocal connection_failures
        if isinstance(exc, requests.ConnectionError | ConnectionError) and not isinstance(
            exc, requests.Timeout
        ):
            connection_failures += 1
            return connection_failures <= CONNECTION_RETRIES
        return bool(base_predicate(exc))

    return Retry(predicate=predicate, initial=0.1, maximum=1.0, multiplier=2.0, timeout=deadline)


# -- queries -------------------------------------------------------------------------------
def query_job_config(
    params: Mapping[str, ParamValue] | None = None,
    *,
    function: str,
    user: str | None = None,
    settings: BigQuerySettings | None = None,
    timeout: float | None = None,
) -> bigquery.QueryJobConfig:
    """The job configuration every query carries: parameters, byte cap, labels, timeout."""
    bq = _settings(settings)
    deadline = float(timeout if timeout is not None else bq.query_timeout_seconds)
    from google.cloud import bigquery as bqlib

    job_config = bqlib.QueryJobConfig(
        query_parameters=[_query_parameter(k, v) for k, v in (params or {}).items()],
        maximum_bytes_billed=bq.maximum_bytes_billed,
        labels=job_labels(function, user),
        use_legacy_sql=False,
    )
    job_config.job_timeout_ms = max(1, int(deadline * 1000))
    return job_config


def run_query(
    sql: str,
    params: Mapping[str, ParamValue] | None = None,
    *,
    function: str,
    user: str | None = None,
    settings: BigQuerySettings | None = None,
    timeout: float | None = None,
    max_results: int | None = None,
) -> list[dict[str, Any]]:
    """Run one parameterized statement; its rows as dicts (``[]`` for DML/DDL).

    ``timeout`` (default ``query_timeout_seconds``) bounds the whole call: past it the
    job is cancelled (server-side ``jobTimeoutMs`` too) and ``BigQueryUnavailable``
    ("timeout") is raised.
    """
    bq = _settings(settings)
    deadline = float(timeout if timeout is not None else bq.query_timeout_seconds)
    client = get_client(bq)
    job_config = query_job_config(
        params, function=function, user=user, settings=bq, timeout=deadline
    )
    job = None
    try:
        if bq.is_emulated:
            # The stand-in's jobs.query answers a failed query with HTTP 200, no rows and
            # the error in the body, which query_and_wait() reads as an empty result.
            # jobs.insert + getQueryResults reports the error. Its jobs are not deleted after
            # reading: it keeps each one (and its result) until deleted, but deleting them
            # made it answer a concurrent query with another job's rows (README).
            job = client.query(
                sql,
                job_config=job_config,
                location=bq.location,
                retry=_retry_policy(deadline),
                job_retry=None,
                timeout=deadline,
            )
            rows = job.result(
                timeout=deadline, retry=_retry_policy(deadline), max_results=max_results
            )
        else:
            rows = client.query_and_wait(
                sql,
                job_config=job_config,
                location=bq.location,
                api_timeout=deadline,
                wait_timeout=deadline,
                retry=_retry_policy(deadline),
                job_retry=None,  # type: ignore[arg-type]  # None disables job retries
                max_results=max_results,
            )
        return [dict(row.items()) for row in rows]
    except Exception as exc:
        if job is not None and isinstance(exc, concurrent.futures.TimeoutError):
            _cancel_quietly(job)
        _raise_mapped(exc, "query")
        raise


def _cancel_quietly(job: Any) -> None:
    """Best effort: ``jobTimeoutMs`` stops the job server-side anyway."""
    with contextlib.suppress(Exception):
        job.cancel(timeout=2.0, retry=None)


class ScriptInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) while a script ran. The job was asked to stop; ``finished`` says
    whether it had run to its end anyway (True: its transaction committed), was stopped
    before (False: rolled back), or is not known (None)."""

    def __init__(self, finished: bool | None) -> None:
        super().__init__()
        self.finished = finished


#: The whole wait for an interrupted script's end, its cancel included.
STOPPED_SCRIPT_WAIT_SECONDS = 10.0


def _stop_script(client: Any, job_id: str, location: str) -> bool | None:
    """Cancel an interrupted script's job and wait for its end: whether it finished. By
    the id it was sent with: the interrupt may land while the request creating it is on its
    way (the stand-in answers it only once the script has run), with no job object yet.
    All within ``STOPPED_SCRIPT_WAIT_SECONDS``; at once None when nothing listens."""
    from google.api_core.exceptions import NotFound
    from requests.exceptions import ConnectionError as Refused
    from requests.exceptions import Timeout

    end = time.monotonic() + STOPPED_SCRIPT_WAIT_SECONDS
    with contextlib.suppress(Exception):
        client.cancel_job(
            job_id, location=location, timeout=min(2.0, end - time.monotonic()), retry=None
        )
    while (left := end - time.monotonic()) > 0:
        try:
            job = client.get_job(job_id, location=location, timeout=min(2.0, left), retry=None)
        except NotFound:
            job = None  # not (yet) known to BigQuery: asked again until the deadline
        except Exception as exc:
            if isinstance(exc, Refused) and not isinstance(exc, Timeout):
                return None  # nothing listens (a stopped stand-in): no answer is coming
            job = None  # busy (the stand-in runs the script before answering): again
        if job is not None and job.state == "DONE":
            return job.error_result is None
        time.sleep(min(0.25, max(0.0, end - time.monotonic())))
    return None


def run_script(
    sql: str,
    *,
    function: str,
    settings: BigQuerySettings | None = None,
    timeout: float,
) -> None:
    """Run a multi-statement script (e.g. ``BEGIN TRANSACTION; ... COMMIT TRANSACTION;``).

    No query parameters: the stand-in does not pass them to scripts. Values come from
    tables the script reads (see ``pipeline.ingest_bigquery``). Interrupted, its job is
    cancelled, not left to run on, and ``ScriptInterrupted`` says whether it had finished.
    """
    bq = _settings(settings)
    client = get_client(bq)
    from google.cloud import bigquery as bqlib

    job_config = bqlib.QueryJobConfig(labels=job_labels(function), use_legacy_sql=False)
    job_id = f"salesmart_{function}_{uuid.uuid4().hex}"
    try:
        job = client.query(
            sql,
            job_config=job_config,
            job_id=job_id,
            location=bq.location,
            retry=_retry_policy(min(timeout, 60.0)),
            job_retry=None,
        )
        job.result(timeout=timeout, retry=_retry_policy(timeout))
    except KeyboardInterrupt:
        print(  # the wait below is the command's, not a hang
            "salesmart: stopping: asking BigQuery whether the load committed"
            f" (up to {STOPPED_SCRIPT_WAIT_SECONDS:.0f} s) ...",
            file=sys.stderr,
            flush=True,
        )
        raise ScriptInterrupted(_stop_script(client, job_id, bq.location)) from None
    except Exception as exc:
        _raise_mapped(exc, "script")
        raise


#: A column: (name, type, mode), e.g. ("price", "NUMERIC", "REQUIRED").
Column = tuple[str, str, str]


def _schema(columns: Sequence[Column]) -> list[Any]:
    from google.cloud import bigquery as bqlib

    return [bqlib.SchemaField(name, kind, mode=mode) for name, kind, mode in columns]


def load_file(
    handle: IO[bytes],
    dataset: str,
    table: str,
    *,
    columns: Sequence[Column],
    source_format: str = "NEWLINE_DELIMITED_JSON",
    write_disposition: str = "WRITE_APPEND",
    function: str = "ingest",
    settings: BigQuerySettings | None = None,
    timeout: float = 3600.0,
) -> None:
    """Load a file (NDJSON by default) into an existing table with one load job.

    No ``size`` argument: the stand-in fails multipart uploads with a size, and a
    resumable upload streams the file in chunks anyway. The job's ``outputRows`` is not
    returned: after an append the stand-in reports the table's total there; count instead.
    """
    bq = _settings(settings)
    client = get_client(bq)
    from google.cloud import bigquery as bqlib

    job_config = bqlib.LoadJobConfig(
        schema=_schema(columns),
        source_format=source_format,
        write_disposition=write_disposition,
        create_disposition="CREATE_NEVER",
        labels=job_labels(function),
    )
    try:
        job = client.load_table_from_file(
            handle,
            table_id(dataset, table, bq),
            job_config=job_config,
            location=bq.location,
            rewind=True,
            timeout=timeout,
        )
        job.result(timeout=timeout, retry=_retry_policy(timeout))
    except Exception as exc:
        _raise_mapped(exc, "load")
        raise


def create_table(
    dataset: str,
    table: str,
    columns: Sequence[Column],
    *,
    clustering: Sequence[str] | None = None,
    expires: datetime | None = None,
    exists_ok: bool = True,
    settings: BigQuerySettings | None = None,
) -> None:
    """Create a table with this schema (kept as is if it exists and ``exists_ok``)."""
    bq = _settings(settings)
    client = get_client(bq)
    from google.cloud import bigquery as bqlib

    spec = bqlib.Table(table_id(dataset, table, bq), schema=_schema(columns))
    if clustering:
        spec.clustering_fields = list(clustering)
    if expires is not None:
        spec.expires = expires
    try:
        client.create_table(spec, exists_ok=exists_ok, retry=_retry_policy(60.0), timeout=60)
    except Exception as exc:
        _raise_mapped(exc, "create table")
        raise


def drop_table(
    dataset: str,
    table: str,
    settings: BigQuerySettings | None = None,
    *,
    timeout: float = 60.0,
) -> None:
    """Delete a table; absent is fine."""
    bq = _settings(settings)
    client = get_client(bq)
    try:
        client.delete_table(
            table_id(dataset, table, bq),
            not_found_ok=True,
            retry=_retry_policy(timeout),
            timeout=timeout,
        )
    except Exception as exc:
        _raise_mapped(exc, "drop table")
        raise


def list_tables(
    dataset: str, prefix: str = "", settings: BigQuerySettings | None = None
) -> list[tuple[str, datetime | None]]:
    """(table name, creation time) of a dataset's tables whose name starts with ``prefix``."""
    bq = _settings(settings)
    client = get_client(bq)
    name = f"{_check_project(bq.project)}.{_check_name(dataset, 'dataset')}"
    try:
        items = list(client.list_tables(name, retry=_retry_policy(60.0), timeout=60))
    except Exception as exc:
        _raise_mapped(exc, "list tables")
        raise
    return [
        (str(item.table_id), item.created)
        for item in items
        if str(item.table_id).startswith(prefix)
    ]


def ensure_datasets(settings: BigQuerySettings | None = None) -> None:
    """Create ``transactions_warehouse`` and ``transactions_mart`` if absent (location set)."""
    bq = _settings(settings)
    client = get_client(bq)
    from google.cloud import bigquery as bqlib

    for name in (bq.warehouse_dataset, bq.mart_dataset):
        dataset = bqlib.Dataset(f"{_check_project(bq.project)}.{_check_name(name, 'dataset')}")
        dataset.location = bq.location
        try:
            client.create_dataset(dataset, exists_ok=True, retry=_retry_policy(60.0), timeout=60)
        except Exception as exc:
            _raise_mapped(exc, "create dataset")
            raise


def ping(settings: BigQuerySettings | None = None, timeout: float | None = None) -> None:
    """``SELECT 1``; raises ``BigQueryUnavailable`` when BigQuery cannot answer."""
    run_query("SELECT 1 AS ok", function="ping", settings=settings, timeout=timeout)


# -- the trends query ----------------------------------------------------------------------
def summary_query(
    filters: TrendFilters, settings: BigQuerySettings | None = None
) -> tuple[str, dict[str, ParamValue]] | None:
    """SQL and parameters of the trends query; None when no row can match."""
    bq = _settings(settings)
    where = ["STARTS_WITH(product, @product_prefix)"]
    params: dict[str, ParamValue] = {"product_prefix": filters.product_prefix}
    for comparison in COMPARISONS:
        value = comparison.value(filters)
        if value is None:
            continue
        if isinstance(value, Decimal) and value > NUMERIC_MAX:  # a money bound past NUMERIC
            if comparison.operator == ">=":
                return None  # above every value
            continue  # every value is below it
        where.append(f"{comparison.column} {comparison.operator} @{comparison.parameter}")
        params[comparison.parameter] = value
    params["limit"] = filters.limit
    params["offset"] = min(filters.offset, INT64_MAX)
    sql = (
        f"SELECT {', '.join(SUMMARY_COLUMNS)}\n"  # nosec B608 - identifiers from settings/constants; values are bound parameters
        f"FROM {table_ref(bq.mart_dataset, SUMMARY_TABLE, bq)}\n"
        f"WHERE {' AND '.join(where)}\n"
        f"ORDER BY {ORDER_BY}\n"
        "LIMIT @limit OFFSET @offset"
    )
    return sql, params


def _as_date(value: Any) -> date:
    if isinstance(value, datetime):  # the stand-in may type a DATE_TRUNC month DATETIME
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


def _as_decimal(value: Any) -> Decimal:
    if isinstance(value, Decimal):
        return value
    if isinstance(value, float):
        return Decimal(repr(value))
    return Decimal(str(value))


def summary_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """One ``summary_sales`` row with the contract's Python types, whatever the backend."""
    return {
        "product": str(row["product"]),
        "sale_month": _as_date(row["sale_month"]),
        "total_amount": _as_decimal(row["total_amount"]),
        "total_quantity": int(row["total_quantity"]),
        "avg_price": _as_decimal(row["avg_price"]),
        "transaction_count": int(row["transaction_count"]),
    }


def query_summary(
    filters: TrendFilters,
    *,
    user: str | None = None,
    function: str = "trends_bq",
    settings: BigQuerySettings | None = None,
) -> list[dict[str, Any]]:
    """The trends rows of ``transactions_mart.summary_sales`` for ``filters``.

    Each row: product (str), sale_month (date), total_amount (Decimal), total_quantity
    (int), avg_price (Decimal), transaction_count (int); ordered by total_amount
    descending, then product (then sale_month). Raises ``BigQueryUnavailable``.
    """
    built = summary_query(filters, settings)
    if built is None:
        return []
    sql, params = built
    try:
        rows = run_query(
            sql,
            params,
            function=function,
            user=user,
            settings=settings,
            max_results=filters.limit,
        )
    except BigQueryUnavailable as exc:
        # Why the function answered 503, as one JSON log line like PostgreSQL's (no error
        # text: it may quote the query). The CLI's own one-line errors carry the detail.
        log_event(
            "bigquery query failed",
            level=logging.WARNING,
            function=function,
            reason=exc.reason,
            error_type=type(exc.__cause__).__name__ if exc.__cause__ else None,
        )
        raise
    return [summary_row(row) for row in rows]
