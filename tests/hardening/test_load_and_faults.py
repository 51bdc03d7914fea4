"""Sustained load on all four functions, then PostgreSQL and the BigQuery stand-in taken away
under load: only 503s during the outage, 200s again within seconds, the same processes.

Everything runs on a PostgreSQL server and a BigQuery stand-in of this module's own (so
stopping them does not disturb parallel tests), loaded with the summary rows dbt built for
this worker. The sustained load lasts ``SALESMART_LOAD_SECONDS`` (default 60 s).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from common import bigquery as bq
from common.auth import Principal, TokenService
from common.config import Settings
from common.pg import connect
from pipeline.bq_emulator import EmulatorHandle, start_emulator
from pipeline.postgres_embedded import EmbeddedPostgres, open_embedded
from tests.conftest import create_database
from tests.functions.conftest import Account, Served, make_user, settings_for
from tests.functions.test_recovery import copy_marts
from tests.hardening.load import Run, Shot, run_load, slope_per_minute

PROJECT = "salesmart-hardening"
THREADS = 8  # per function process: also each pool's connection bound
LOAD_SECONDS = float(os.environ.get("SALESMART_LOAD_SECONDS", "60"))
CONCURRENCY = 64
OUTAGE_SECONDS = 10.0


@dataclass
class Stack:
    pg: EmbeddedPostgres
    emulator: EmulatorHandle
    settings: Settings
    functions: dict[str, Served]
    account: Account
    bearer: dict[str, str]


def _load_bigquery(settings: Settings, rows: list[list[object]]) -> None:
    bqs = settings.bigquery
    bq.ensure_datasets(bqs)
    table = bq.table_ref(bqs.mart_dataset, bq.SUMMARY_TABLE, bqs)
    values = []
    for product, month, total, quantity, avg, count in rows:
        assert "'" not in str(product)
        values.append(
            f"('{product}', DATE '{month}', NUMERIC '{total}', {quantity},"
            f" NUMERIC '{avg}', {count})"
        )
    bq.run_script(
        f"CREATE TABLE {table} (product STRING, sale_month DATE, total_amount NUMERIC,"
        " total_quantity INT64, avg_price NUMERIC, transaction_count INT64);\n"
        f"INSERT INTO {table} VALUES {', '.join(values)};",
        function="tests",
        settings=bqs,
        timeout=120,
    )


@pytest.fixture(scope="module")
def stack(marts_dsn: str, serve: Callable[..., Served]) -> Iterator[Stack]:
    root = Path(tempfile.mkdtemp(prefix="salesmart-pg-hard-"))
    root.chmod(0o755)
    pg = open_embedded(root / "pg", fsync=False)
    pg.start()
    emulator = start_emulator(root / "bq", PROJECT)
    try:
        dsn = create_database(pg, migrated=False)
        copy_marts(marts_dsn, dsn)
        env = {
            "SALESMART_DATABASE_URL": dsn,
            "SALESMART_BQ_ENDPOINT": emulator.endpoint,
            "SALESMART_BQ_PROJECT": PROJECT,
            "THREADS": str(THREADS),
        }
        settings = settings_for(dsn, **env)
        conn = connect(dsn)
        rows = conn.run(
            "SELECT product, sale_month, total_amount, total_quantity, avg_price,"
            " transaction_count FROM public.summary_sales"
        )
        conn.close()
        _load_bigquery(settings, rows)
        account = make_user(dsn, "analyst")
        functions = {name: serve(name, **env) for name in ("token", "trends_pg", "trends_bq")}
        functions["dashboard"] = serve("dashboard", **env)
        token = TokenService(settings).issue(Principal(account.username, "analyst"))
        yield Stack(
            pg,
            emulator,
            settings,
            functions,
            account,
            {"Authorization": f"Bearer {token.access_token}"},
        )
    finally:
        emulator.stop()
        bq.reset_clients()
        pg.stop(mode="immediate")
        shutil.rmtree(root, ignore_errors=True)


def shots(stack: Stack) -> list[Shot]:
    f = {name: served.url for name, served in stack.functions.items()}
    bearer = stack.bearer
    login = {"username": stack.account.username, "password": stack.account.password}
    return [
        Shot("token", lambda s: s.post(f"{f['token']}/token", data=login, timeout=30), 2),
        Shot(
            "token_bad",
            lambda s: s.post(
                f"{f['token']}/token",
                data={"username": f"nobody{os.urandom(6).hex()}", "password": "wrong"},
                timeout=30,
            ),
        ),
        Shot(
            "trends_pg",
            lambda s: s.get(
                f"{f['trends_pg']}/sales/pg-trends",
                params={"sale_month": "2023-10", "limit": "5"},
                headers=bearer,
                timeout=30,
            ),
            4,
        ),
        Shot(
            "trends_pg_422",
            lambda s: s.get(
                f"{f['trends_pg']}/sales/pg-trends",
                params={"limit": "0"},
                headers=bearer,
                timeout=30,
            ),
        ),
        Shot("trends_pg_401", lambda s: s.get(f"{f['trends_pg']}/sales/pg-trends", timeout=30)),
        Shot(
            "trends_bq",
            lambda s: s.get(f"{f['trends_bq']}/sales/trends", headers=bearer, timeout=30),
            2,
        ),
        Shot("dashboard", lambda s: s.get(f"{f['dashboard']}/", headers=bearer, timeout=30), 3),
        Shot("health", lambda s: s.get(f"{f['trends_bq']}/healthz", timeout=30)),
    ]


EXPECTED = {
    "token": {200},
    "token_bad": {401},
    "trends_pg": {200},
    "trends_pg_422": {422},
    "trends_pg_401": {401},
    "trends_bq": {200},
    "dashboard": {200},
    "health": {200},
}


def tree_rss(pid: int) -> int:
    process = psutil.Process(pid)
    total = 0
    for member in (process, *process.children(recursive=True)):
        with contextlib.suppress(psutil.NoSuchProcess):
            total += member.memory_info().rss
    return total


def pg_connections(stack: Stack) -> int:
    conn = connect(stack.pg.dsn)
    try:
        rows = conn.run(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'salesmart-%'"
        )
        return int(rows[0][0])
    finally:
        conn.close()


def summary(run: Run) -> str:
    by_name = {name: dict(run.statuses(name)) for name in sorted({r.name for r in run.records})}
    return f"{len(run.records)} requests, errors {dict(run.errors)}, statuses {by_name}"


def test_sustained_load(stack: Stack) -> None:
    rss: dict[str, list[tuple[float, float]]] = {name: [] for name in stack.functions}
    connections: list[tuple[float, int]] = []

    def sample(elapsed: float) -> None:
        for name, served in stack.functions.items():
            rss[name].append((elapsed, tree_rss(served.process.pid) / 2**20))
        connections.append((elapsed, pg_connections(stack)))

    run = run_load(
        shots(stack), seconds=LOAD_SECONDS, concurrency=CONCURRENCY, on_tick=sample, tick=2.0
    )
    report = summary(run)
    print(report)
    # A kept-alive connection the server closes as the client reuses it is a client-side
    # race (requests does not retry it): tolerated at under 0.1 %, never a wrong status.
    assert sum(run.errors.values()) <= len(run.records) / 1000, report
    unexpected = [r for r in run.records if r.status and r.status not in EXPECTED[r.name]]
    assert not unexpected, report
    assert len(run.records) > 10 * LOAD_SECONDS, report  # it really was under load

    # Memory flat: after a warm-up quarter, no growth trend beyond a few MiB per minute.
    for name, samples in rss.items():
        steady = [s for s in samples if s[0] >= LOAD_SECONDS / 4]
        slope = slope_per_minute(steady)
        first, last = steady[0][1], steady[-1][1]
        print(f"{name}: RSS {first:.1f} -> {last:.1f} MiB, slope {slope:+.2f} MiB/min")
        assert slope < 15.0, (name, samples)  # warm-up of the BigQuery client: ~4
        assert last - first < 16.0, (name, samples)

    # No connection leak: never above the pools' bound, none left over. (Each pool opens
    # connections as concurrent queries need them, up to THREADS, so when it reaches its
    # peak depends on the machine's speed: a leak shows as a count past the bound.)
    counts = [c for _, c in connections]
    print(f"PostgreSQL connections during load: {counts}")
    bound = 3 * THREADS  # token, trends_pg and dashboard pools
    assert max(counts) <= bound, counts
    time.sleep(1)
    assert pg_connections(stack) <= bound
    for served in stack.functions.values():
        assert served.process.poll() is None


def _outage(
    stack: Stack,
    names: tuple[str, ...],
    stop: Callable[[], None],
    start: Callable[[], None],
    recovery_seconds: float,
) -> None:
    marks: dict[str, float] = {}
    before = 4.0
    total = before + OUTAGE_SECONDS + recovery_seconds + 6.0

    def control(elapsed: float) -> float | None:
        called = time.monotonic()
        if "stop" not in marks and elapsed >= before:
            marks["stop_begin"] = elapsed
            stop()
            marks["stop"] = elapsed + time.monotonic() - called
        elif "stop" in marks and "start" not in marks and elapsed >= before + OUTAGE_SECONDS:
            marks["start_begin"] = elapsed
            start()
            marks["start"] = elapsed + time.monotonic() - called
            return marks["start"] + recovery_seconds + 6.0  # long enough to see the recovery
        return None

    wanted = [s for s in shots(stack) if s.name in names]
    run = run_load(wanted, seconds=total, concurrency=16, on_tick=control, tick=0.25)
    report = f"{summary(run)}; marks {marks}"
    print(report)
    print(
        f"stop took {marks['stop'] - marks['stop_begin']:.1f} s, start took"
        f" {marks['start'] - marks['start_begin']:.1f} s"
    )
    assert "start" in marks, report
    # As in the sustained test: a kept-alive connection closed under the client as it is
    # reused is a client-side race, tolerated at under 0.1 %; every status is checked.
    assert sum(run.errors.values()) <= len(run.records) / 1000, report
    assert {r.status for r in run.records if r.status} <= {200, 503}, report
    # Before the outage (answered before the stop began): all 200; a request still in flight
    # when the warehouse goes (slow under a loaded machine) may rightly get its 503.
    # During the outage (after the first second): only 503.
    answered = [r for r in run.records if r.status]  # 0: a tolerated client-side race
    before_outage = [r for r in answered if r.at + r.seconds < marks["stop_begin"]]
    assert before_outage and all(r.status == 200 for r in before_outage), report
    during = [
        r for r in answered if marks["stop"] + 1 < r.at and r.at + r.seconds < marks["start_begin"]
    ]
    assert during and all(r.status == 503 for r in during), report
    # 503s answer fast (timeouts, not hangs); after the restart, 200s within the bound.
    assert max(r.seconds for r in run.records if r.status == 503) < 15, report
    last_503 = max(r.at for r in run.records if r.status == 503)
    print(f"last 503 {last_503 - marks['start']:.1f} s after the restart")
    assert last_503 < marks["start"] + recovery_seconds, report
    after = [r for r in answered if r.at > marks["start"] + recovery_seconds]
    assert len(after) > 10 and all(r.status == 200 for r in after), report
    for served in stack.functions.values():
        assert served.process.poll() is None  # no restart


def test_postgres_outage_under_load(stack: Stack) -> None:
    _outage(
        stack,
        ("trends_pg", "dashboard", "token"),
        lambda: stack.pg.stop(mode="fast"),
        stack.pg.start,
        # Alone: 200s within ~1 s of the restart; beside other tests on 2 cores we measured
        # 11-21 s of failed connects before the pools caught up (with the earlier driver).
        recovery_seconds=30.0,
    )


def test_bigquery_outage_under_load(stack: Stack) -> None:
    _outage(
        stack,
        ("trends_bq",),
        stack.emulator.stop,
        stack.emulator.restart,
        recovery_seconds=12.0,
    )
