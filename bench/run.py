"""``make bench`` / ``python -m bench.run``: every measurement in one run, then the results.

Steps: the dataset (generated once, cached in bench/data/), an embedded PostgreSQL with
fsync on, ingestion beside plain COPY (the last load stays for serving), dbt, the BigQuery
stand-in loaded and built, then, each only once the machine is quiet (1-minute load below
``--max-load``): cold starts, throughput/latency per concurrency with wrk beside the hello
function and pgbench, memory, login latency. Writes bench/results/<UTC time>.json,
bench/RESULTS.md and helm/salesmart/values-recommended.yaml (``--quick`` writes them under
bench/data/quick/ instead, for trying the harness).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import functions as fn
from bench import ingestion, load, recommend, report
from bench.machine import load_average, machine, median, ratio, wait_for_quiet
from bench.stack import BENCH_PASSWORD, BENCH_USER, DATA_DIR, Stack, dataset, running_stack
from common.config import REPO_ROOT, Settings

VALUES_FILE = report.VALUES_FILE
QUICK_DIR = DATA_DIR / "quick"
SERVING_DB = "bench_serve"
TOKEN_TTL_SECONDS = "86400"  # noqa: S105 - the longest allowed: a token outlives the run
LOAD_ORDER = ("hello", "trends_pg", "dashboard", "trends_bq", "token")


def say(message: str) -> None:
    print(message, flush=True)


@contextmanager
def section(results: dict[str, Any], name: str) -> Iterator[dict[str, Any]]:
    started = time.monotonic()
    say(f"- {name} (load {load_average()[0]:.2f})")
    entry: dict[str, Any] = {"load_average_before": load_average()}
    yield entry
    entry["load_average_after"] = load_average()
    entry["seconds"] = round(time.monotonic() - started, 1)
    results[name] = entry


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the dataset")
    parser.add_argument(
        "--bq-rows",
        type=int,
        default=100_000,
        help="rows loaded into the BigQuery stand-in (a DuckDB emulator, far slower to load)",
    )
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per load level")
    parser.add_argument(
        "--concurrency",
        default="1,2,4,8,16,32,64",
        help="comma-separated concurrency levels (1, 8, 32 and 64 are the targets' levels)",
    )
    parser.add_argument("--cold-runs", type=int, default=5, help="cold starts per function")
    parser.add_argument("--ingest-runs", type=int, default=3, help="ingests and COPYs")
    parser.add_argument(
        "--baseline-ingest",
        metavar="COMMIT",
        default=None,
        help="also time the loader as it was at COMMIT (before/after numbers)",
    )
    parser.add_argument("--max-load", type=float, default=1.5, help="quiet: 1-min load below")
    parser.add_argument(
        "--max-wait", type=float, default=900.0, help="seconds to wait for quiet per section"
    )
    parser.add_argument(
        "--wait-budget",
        type=float,
        default=2700.0,
        help="seconds of waiting for quiet in the whole run; then sections run at once",
    )
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated sections: ingest,dbt,bigquery,cold,load,login (default: all)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a fast trial of the harness: small data, short runs, results under bench/data/",
    )
    parser.add_argument("--keep-state", type=Path, default=None, help="reuse a server folder")
    parser.add_argument(
        "--serving-env",
        type=lambda text: Path(text).resolve(),
        default=fn.SERVING_ENV,
        help="the environment the instances run from (default: .venv-serve, the image's lock)",
    )
    return parser


def display_path(path: Path) -> str:
    """``path`` relative to the checkout when inside it: results read alike in any clone."""
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def function_runtime(stack: Stack, settings: Settings, serving_env: Path) -> fn.Runtime:
    """How every instance, the floor's included, runs. Bytecode is cached (in a folder of
    this run), as in the image, where pip compiles it at install: without it every start
    would compile each imported module again (PYTHONDONTWRITEBYTECODE)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SALESMART_") and k != "PYTHONDONTWRITEBYTECODE"
    }
    env.update(
        {
            "PYTHONPYCACHEPREFIX": str(stack.root / "pycache"),
            "SALESMART_ENV": "prod",
            "SALESMART_CONFIG": str(settings.config_path),
            "SALESMART_DATABASE_URL": settings.database_url,
            "SALESMART_JWT_SECRET": stack.jwt_secret,
            "SALESMART_PII_KEY": stack.pii_key,
            "SALESMART_BQ_PROJECT": settings.bigquery.project,
            "SALESMART_BQ_LOCATION": settings.bigquery.location,
            "SALESMART_TOKEN_TTL_SECONDS": TOKEN_TTL_SECONDS,
        }
    )
    if settings.bigquery.api_endpoint:
        env["SALESMART_BQ_ENDPOINT"] = settings.bigquery.api_endpoint
    return fn.Runtime(env, serving_env)


def probes(settings: Settings) -> dict[str, fn.Probe]:
    from common.auth import Principal, TokenService

    token = TokenService(settings).issue(Principal(BENCH_USER, "analyst")).access_token
    bearer = {"Authorization": f"Bearer {token}"}
    return {
        "hello": fn.Probe("GET", "/"),
        "token": fn.Probe(
            "POST",
            "/token",
            {"Content-Type": "application/x-www-form-urlencoded"},
            fn.form({"username": BENCH_USER, "password": BENCH_PASSWORD}),
        ),
        "trends_pg": fn.Probe("GET", "/sales/pg-trends", bearer),
        "trends_bq": fn.Probe("GET", "/sales/trends", bearer),
        "dashboard": fn.Probe("GET", "/", bearer),
    }


# -- sections -------------------------------------------------------------------------------
def run_dbt_timed(target: str, settings: Settings, work: Path) -> dict[str, Any]:
    from pipeline.transform import run_dbt

    result = run_dbt(target, settings, work_dir=work, timeout=3600)
    return result.as_dict()


def add_bench_user(settings: Settings) -> None:
    from common.pg import connect
    from pipeline.users import add_user

    conn = connect(settings.database_url)
    try:
        add_user(conn, BENCH_USER, BENCH_PASSWORD, "analyst", settings.bcrypt_rounds, replace=True)
    finally:
        conn.close()


def cold_starts(
    names: Sequence[str], runtime: fn.Runtime, probes_: dict[str, fn.Probe], runs: int, logs: Path
) -> dict[str, Any]:
    """``runs`` rounds, each starting every function once (interleaved: noise hits all)."""
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for name in names:  # unmeasured: fills the bytecode cache and the page cache
        instance = fn.start(name, runtime, logs)
        try:
            fn.first_ok(instance, probes_[name])
        finally:
            instance.stop()
    for run in range(runs):
        for name in names:
            instance = fn.start(name, runtime, logs)
            try:
                seconds[name].append(fn.first_ok(instance, probes_[name]))
            finally:
                instance.stop()
        say(
            "  round " + str(run + 1) + ": " + ", ".join(f"{n} {seconds[n][-1]:.3f}" for n in names)
        )
    floor = median(seconds["hello"])
    return {
        name: {
            "runs_seconds": [round(s, 4) for s in values],
            "median_seconds": round(median(values), 4),
            "ratio_to_hello": ratio(median(values), floor),
        }
        for name, values in seconds.items()
    }


class MemorySampler:
    """The highest memory (RSS and PSS) of an instance while a load runs, every 100 ms."""

    def __init__(self, instance: fn.Instance) -> None:
        self.instance = instance
        self.peak = fn.Memory(0, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            now = self.instance.memory()
            self.peak = fn.Memory(max(self.peak.rss, now.rss), max(self.peak.pss, now.pss))
            self._stop.wait(0.1)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def mib(size: int) -> float:
    return round(size / 2**20, 1)


def load_curve(
    name: str,
    runtime: fn.Runtime,
    probe: fn.Probe,
    levels: Sequence[int],
    duration: float,
    logs: Path,
) -> dict[str, Any]:
    with fn.running(name, runtime, logs, probe) as instance:
        for _ in range(20):  # warm: pool connections, lazy imports, caches
            fn.request(instance, probe)
        time.sleep(1.0)
        idle = instance.memory()
        curve = []
        peak = fn.Memory(0, 0)
        for connections in levels:
            with MemorySampler(instance) as sampler:
                point = load.wrk(instance.url, probe, connections=connections, seconds=duration)
            point["rss_peak_mib"] = mib(sampler.peak.rss)
            point["pss_peak_mib"] = mib(sampler.peak.pss)
            point["load_average"] = load_average()
            peak = fn.Memory(max(peak.rss, sampler.peak.rss), max(peak.pss, sampler.peak.pss))
            curve.append(point)
            lat = point["latency_ms"]
            say(
                f"  {name} c={connections}: {point['requests_per_second']} req/s, p50"
                f" {lat['p50']} p95 {lat['p95']} p99 {lat['p99']} ms,"
                f" errors {sum(point['errors'].values())}"
            )
    return {
        "rss_idle_mib": mib(idle.rss),
        "rss_under_load_mib": mib(peak.rss),
        "pss_idle_mib": mib(idle.pss),
        "pss_under_load_mib": mib(peak.pss),
        "curve": curve,
    }


def pgbench_curve(
    stack: Stack, settings: Settings, levels: Sequence[int], duration: float
) -> dict[str, Any]:
    from common.trends import TrendFilters

    sql, variables = load.trends_sql(settings.mart_schema, TrendFilters())
    curve = []
    for clients in levels:
        point = load.pgbench(stack, SERVING_DB, sql, variables, clients=clients, seconds=duration)
        point["connections"] = clients
        point["load_average"] = load_average()
        curve.append(point)
        lat = point["latency_ms"]
        say(
            f"  pgbench c={clients}: {point['requests_per_second']} tps, p50 {lat['p50']}"
            f" p99 {lat['p99']} ms"
        )
    return {"sql": sql, "variables": variables, "curve": curve}


def login_latency(settings: Settings, runs: int = 5) -> dict[str, Any]:
    import bcrypt

    hashed = bcrypt.hashpw(BENCH_PASSWORD.encode(), bcrypt.gensalt(settings.bcrypt_rounds))
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        bcrypt.checkpw(BENCH_PASSWORD.encode(), hashed)
        seconds.append(time.perf_counter() - started)
    return {
        "bcrypt_rounds": settings.bcrypt_rounds,
        "bcrypt_check_ms_median": round(median(seconds) * 1000, 1),
    }


# -- main -----------------------------------------------------------------------------------
def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds: every server and instance started is stopped


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    if args.quick:
        args.rows = min(args.rows, 20_000)
        args.bq_rows = min(args.bq_rows, 2_000)
        args.duration = min(args.duration, 3.0)
        args.concurrency = "1,8"
        args.cold_runs = min(args.cold_runs, 2)
        args.ingest_runs = 1
        args.max_wait = 0.0
        args.wait_budget = 0.0
    levels = sorted({int(x) for x in args.concurrency.split(",") if x.strip()})
    only = {x.strip() for x in args.only.split(",") if x.strip()}

    def wanted(name: str) -> bool:
        return not only or name in only

    serve = fn.serve_script(args.serving_env)
    if (wanted("cold") or wanted("load")) and not serve.exists():
        say(f"{serve} is missing: `make bench` installs it (or pass --serving-env)")
        return 1
    if wanted("load") and not load.wrk_available():
        say("wrk is missing: `make bench` installs it (apt-get install wrk)")
        return 1
    out_dir = QUICK_DIR if args.quick else report.RESULTS_DIR
    started_at = datetime.now(UTC)
    results: dict[str, Any] = {
        "started_at": started_at.isoformat(timespec="seconds"),
        "machine": machine(),
        "settings": {
            "rows": args.rows,
            "bq_rows": args.bq_rows,
            "duration_seconds": args.duration,
            "concurrency": levels,
            "cold_runs": args.cold_runs,
            "ingest_runs": args.ingest_runs,
            "max_load": args.max_load,
            "max_wait_seconds": args.max_wait,
            "wait_budget_seconds": args.wait_budget,
            "gunicorn": fn.GUNICORN_ENV,
            "serving_env": display_path(args.serving_env),
            "quick": args.quick,
        },
        "quiet": {},
    }
    path = dataset(args.rows)
    bq_path = dataset(args.bq_rows) if args.bq_rows != args.rows else path

    budget = [args.wait_budget]

    def quiet(name: str) -> None:
        allowed = max(0.0, min(args.max_wait, budget[0]))
        seen = wait_for_quiet(args.max_load, allowed, say)
        budget[0] -= seen["waited_seconds"]
        results["quiet"][name] = seen

    with running_stack(args.keep_state) as stack:
        logs = stack.root / "logs"
        settings = stack.settings(SERVING_DB, SALESMART_TOKEN_TTL_SECONDS=TOKEN_TTL_SECONDS)
        if wanted("ingest"):
            quiet("ingest")
            with section(results, "ingestion") as entry:
                entry.update(
                    ingestion.measure(
                        stack,
                        path,
                        runs=args.ingest_runs,
                        serving_database=SERVING_DB,
                        say=say,
                        baseline=args.baseline_ingest,
                    )
                )
        else:
            ingestion.ingest_once(stack, path, SERVING_DB)
        with section(results, "dbt_postgres") as entry:
            entry.update(run_dbt_timed("postgres", settings, stack.root / "dbt-postgres"))
            say(f"  dbt build on PostgreSQL: {entry['duration_seconds']} s")
        add_bench_user(settings)

        emulator = None
        names = ["hello", "token", "trends_pg", "dashboard"]
        if wanted("bigquery") or wanted("cold") or wanted("load"):
            from pipeline.bq_emulator import start_emulator
            from pipeline.ingest_bigquery import ingest_bigquery

            emulator = start_emulator(stack.root / "bigquery", settings.bigquery.project)
            settings = dataclasses.replace(
                settings,
                bigquery=dataclasses.replace(settings.bigquery, api_endpoint=emulator.endpoint),
            )
            with section(results, "bigquery") as entry:
                started = time.perf_counter()
                loaded = ingest_bigquery(bq_path, settings)
                entry["rows"] = loaded.read
                entry["ingest_seconds"] = round(time.perf_counter() - started, 2)
                entry["ingest_rows_per_second"] = round(loaded.read / entry["ingest_seconds"])
                say(f"  BigQuery stand-in: {loaded.summary()} in {entry['ingest_seconds']} s")
                entry["dbt"] = run_dbt_timed("bigquery", settings, stack.root / "dbt-bigquery")
                say(f"  dbt build on the stand-in: {entry['dbt']['duration_seconds']} s")
            names.insert(3, "trends_bq")
        try:
            runtime = function_runtime(stack, settings, args.serving_env)
            probes_ = probes(settings)
            if wanted("cold"):
                quiet("cold")
                with section(results, "cold_start") as entry:
                    entry.update(cold_starts(names, runtime, probes_, args.cold_runs, logs))
            if wanted("load"):
                curves: dict[str, Any] = {}
                for name in [n for n in LOAD_ORDER if n in names]:
                    quiet(f"load_{name}")
                    with section(curves, name) as entry:
                        entry.update(
                            load_curve(name, runtime, probes_[name], levels, args.duration, logs)
                        )
                quiet("load_pgbench")
                with section(curves, "pgbench") as entry:
                    entry.update(pgbench_curve(stack, settings, levels, args.duration))
                results["load"] = curves
            if wanted("login"):
                with section(results, "login") as entry:
                    entry.update(login_latency(settings))
        finally:
            if emulator is not None:
                emulator.stop()

    results["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    results["load_average_at_end"] = load_average()
    recommended: dict[str, Any] = {}
    if "load" in results:
        recommended = recommend.from_results(results)
        results["recommended"] = recommended
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = started_at.strftime("%Y%m%dT%H%M%SZ")
    json_path = out_dir / f"{stamp}.json"
    json_path.write_text(json.dumps(results, indent=2, default=_json_default) + "\n")
    say(f"results: {json_path}")
    md_path = QUICK_DIR / "RESULTS.md" if args.quick else report.RESULTS_MD
    md_path.write_text(report.markdown(results, json_path))
    say(f"summary: {md_path}")
    if recommended and not only:
        values_path = QUICK_DIR / "values-recommended.yaml" if args.quick else VALUES_FILE
        values_path.write_text(report.values_file(results, json_path))
        say(f"values: {values_path}")
    return 0


def _json_default(value: object) -> object:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return str(value)


if __name__ == "__main__":
    sys.exit(main())
