"""Ingestion rows/s (``pipeline.ingest.ingest_postgres``) beside a plain ``COPY`` of the same
file (``psql \\copy`` into a table of five text columns: the database floor), and beside a
``COPY`` into a table of the raw area's shape (typed columns, ``transaction_id`` primary key)
of the rows the loader kept (the shape refuses the file's bad rows): what loading into a
deduplicating table costs the database before any validation."""

from __future__ import annotations

import importlib
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.machine import load_average, median, ratio
from bench.stack import DATA_DIR, Stack
from common.config import REPO_ROOT
from common.pg import close_quietly, connect
from pipeline.ingest import ingest_postgres

PLAIN_TABLE = "plain_copy"
TYPED_TABLE = "typed_copy"
Ingest = Callable[..., Any]
# The loader's modules, as a baseline commit had them (``--baseline-ingest COMMIT``).
BASELINE_MODULES = {
    "pipeline/ingest.py": "ingest",
    "pipeline/csvsource.py": "csvsource",
    "common/validation.py": "validation",
    "common/masking.py": "masking",
}


def baseline_ingest(commit: str) -> tuple[Ingest, str]:
    """``ingest_postgres`` of an earlier commit (its loader modules copied under
    bench/data/, imports pointed at each other) and the full commit id."""
    full = subprocess.run(
        ["git", "rev-parse", "--verify", f"{commit}^{{commit}}"],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    package = f"baseline_{full[:12]}"
    folder = DATA_DIR / package
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "__init__.py").write_text("")
    for source, name in BASELINE_MODULES.items():
        text = subprocess.run(
            ["git", "show", f"{full}:{source}"],
            cwd=REPO_ROOT,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        for other_source, other in BASELINE_MODULES.items():
            dotted = other_source.removesuffix(".py").replace("/", ".")
            parent, _, leaf = dotted.rpartition(".")
            target = f"bench.data.{package}"
            text = re.sub(
                rf"\bfrom {re.escape(dotted)} import", f"from {target}.{other} import", text
            )
            text = re.sub(
                rf"\bfrom {re.escape(parent)} import {leaf}\b",
                f"from {target} import {other}",
                text,
            )
        (folder / f"{name}.py").write_text(text)
    module = importlib.import_module(f"bench.data.{package}.ingest")
    return module.ingest_postgres, full


def count_rows(path: Path) -> int:
    """Data records of a generated file (one per line after the header)."""
    with path.open("rb") as handle:
        return sum(block.count(b"\n") for block in iter(lambda: handle.read(1 << 20), b"")) - 1


# The two floors: five text columns (nothing checked) and the raw area's shape.
PLAIN_COLUMNS = "a text, b text, c text, d text, e text"
TYPED_COLUMNS = (
    "transaction_id text PRIMARY KEY, product text NOT NULL, price numeric NOT NULL,"
    " quantity integer NOT NULL, sale_date date NOT NULL"
)


def copy_into(stack: Stack, path: Path, database: str, table: str, columns: str) -> float:
    """Seconds of a ``psql \\copy`` of ``path`` into a new table ``table (columns)``."""
    stack.psql(database, f"DROP TABLE IF EXISTS {table}", f"CREATE TABLE {table} ({columns})")
    return stack.psql(database, f"\\copy {table} FROM '{path}' WITH (FORMAT csv, HEADER true)")


def ingest_once(
    stack: Stack, path: Path, database: str, ingest: Ingest = ingest_postgres
) -> tuple[float, dict[str, Any]]:
    stack.create_database(database)
    settings = stack.settings(database)
    conn = connect(settings.database_url)
    try:
        started = time.perf_counter()
        result = ingest(conn, path, settings)
        seconds = time.perf_counter() - started
    finally:
        close_quietly(conn)
    return seconds, result.as_dict()


def measure(
    stack: Stack,
    path: Path,
    *,
    runs: int,
    serving_database: str,
    say: Callable[[str], None],
    baseline: str | None = None,
) -> dict[str, Any]:
    """Median of ``runs`` plain COPYs and ``runs`` ingests, each into a fresh database.

    The last ingest stays in ``serving_database`` for the function benchmarks.
    """
    rows = count_rows(path)
    load_before = load_average()
    copy_seconds: list[float] = []
    stack.create_database("bench_copy", migrated=False)
    for run in range(runs):
        copy_seconds.append(copy_into(stack, path, "bench_copy", PLAIN_TABLE, PLAIN_COLUMNS))
        say(f"  plain COPY {run + 1}/{runs}: {copy_seconds[-1]:.2f} s")
    ingest_seconds: list[float] = []
    outcome: dict[str, Any] = {}
    for run in range(runs):
        database = serving_database if run == runs - 1 else f"bench_ingest_{run}"
        seconds, outcome = ingest_once(stack, path, database)
        ingest_seconds.append(seconds)
        say(f"  ingest {run + 1}/{runs}: {seconds:.2f} s ({outcome['loaded']} loaded)")
        if database != serving_database:
            stack.psql("postgres", f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    # The raw shape refuses the file's bad rows, so its floor copies the rows the loader kept.
    loaded_path = path.with_suffix(".loaded.csv")
    stack.psql(
        serving_database,
        "\\copy (SELECT transaction_id, product, price, quantity, sale_date FROM raw.transactions)"
        f" TO '{loaded_path}' WITH (FORMAT csv, HEADER true)",
    )
    loaded_rows = count_rows(loaded_path)
    typed_seconds: list[float] = []
    for run in range(runs):
        typed_seconds.append(
            copy_into(stack, loaded_path, "bench_copy", TYPED_TABLE, TYPED_COLUMNS)
        )
        say(
            f"  COPY of the loaded rows into the raw shape {run + 1}/{runs}:"
            f" {typed_seconds[-1]:.2f} s"
        )
    loaded_path.unlink()
    before: dict[str, Any] | None = None
    if baseline:
        old_ingest, commit = baseline_ingest(baseline)
        old_seconds: list[float] = []
        for run in range(runs):
            seconds, _ = ingest_once(stack, path, "bench_ingest_baseline", old_ingest)
            old_seconds.append(seconds)
            say(f"  ingest at {commit[:10]} {run + 1}/{runs}: {seconds:.2f} s")
        stack.psql("postgres", 'DROP DATABASE IF EXISTS "bench_ingest_baseline" WITH (FORCE)')
        before = {
            "commit": commit,
            "ingest_seconds": [round(s, 3) for s in old_seconds],
            "ingest_rows_per_second": round(rows / median(old_seconds)),
        }
    copy_median = median(copy_seconds)
    ingest_median = median(ingest_seconds)
    copy_rate = rows / copy_median
    ingest_rate = rows / ingest_median
    typed_rate = loaded_rows / median(typed_seconds)
    return {
        "rows": rows,
        "file_bytes": path.stat().st_size,
        "runs": runs,
        "plain_copy_seconds": [round(s, 3) for s in copy_seconds],
        "ingest_seconds": [round(s, 3) for s in ingest_seconds],
        "plain_copy_rows_per_second": round(copy_rate),
        "ingest_rows_per_second": round(ingest_rate),
        "ratio_to_copy": ratio(ingest_rate, copy_rate),
        "typed_copy_rows": loaded_rows,
        "typed_copy_seconds": [round(s, 3) for s in typed_seconds],
        "typed_copy_rows_per_second": round(typed_rate),
        "ratio_to_typed_copy": ratio(ingest_rate, typed_rate),
        "result": outcome,
        "baseline": before,
        "load_average_before": load_before,
        "load_average_after": load_average(),
    }
