"""Real dbt-bigquery against the local BigQuery stand-in, beside real dbt on PostgreSQL:
the same files loaded into both warehouses give the same marts."""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from common.config import Settings, build_settings
from common.masking import mask
from common.pg import connect
from pipeline.bq_emulator import start_emulator
from pipeline.generate import generate
from pipeline.ingest import ingest_postgres
from pipeline.ingest_bigquery import ingest_bigquery
from pipeline.postgres_embedded import EmbeddedPostgres
from pipeline.transform import TransformError, TransformResult, run_dbt
from tests.conftest import SAMPLE_CSV, create_database

# Averages that do not terminate (10.003333...) and a price with one decimal.
EXTRA_CSV = """transaction_id,product,price,quantity,date
E001,Halal Dates,10.00,1,2023-11-05
E002,Halal Dates,10.00,2,2023-11-06
E003,Halal Dates,10.01,3,2023-11-30
E004,Halal Dates,12.34,1,2023-12-01
E005,Halal Honey,15.5,4,2024-01-15
E006,Halal Honey,15.55,7,2024-01-31
L001,Halal Gold,8690961.24,1,2021-04-02
L002,Halal Gold,8690961.25,1,2021-04-01
L003,Halal Gold Bar,999999999999999.99,1,2024-01-01
L004,Halal Gold Bar,999999999999999.98,2,2024-01-02
L005,Halal Gold Bar,999999999999999.98,1,2024-01-03
"""
# L: means far beyond a float's exactness (a half cent at 8.7e6; 17 digits at 1e15).
# M: a mean with a tie at the tenth decimal, 2561.59 / 256 = 10.0062109375 (cut: ...937).
EXTRA_CSV += "".join(
    f"M{i:03},Halal Tie,{'10.01' if i < 159 else '10.00'},1,2025-05-01\n" for i in range(256)
)
MART_SCHEMA = "sales_marts"


@dataclasses.dataclass
class Warehouses:
    settings: Settings
    pg: TransformResult
    bq: TransformResult
    bq_work_dir: Path
    client: Any


@pytest.fixture(scope="module")
def warehouses(
    pg_server: EmbeddedPostgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Warehouses]:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    work = tmp_path_factory.mktemp("dbt-bq")
    files = [SAMPLE_CSV, work / "extra.csv", work / "generated.csv"]
    files[1].write_text(EXTRA_CSV, encoding="utf-8")
    generate(files[2], 300, seed=7)

    emulator_dir = Path(tempfile.mkdtemp(prefix="salesmart-bqemu-"))
    with start_emulator(emulator_dir, "salesmart-local", persistent=False) as emulator:
        settings = build_settings(
            {
                **os.environ,
                "SALESMART_DATABASE_URL": create_database(pg_server),
                "SALESMART_BQ_ENDPOINT": emulator.endpoint,
                "SALESMART_BQ_PROJECT": "salesmart-local",
                # A custom PostgreSQL mart schema is honoured, exactly as named.
                "SALESMART_PG_MART_SCHEMA": MART_SCHEMA,
            }
        )
        for path in files:
            conn = connect(settings.database_url)
            try:
                ingest_postgres(conn, path, settings)
            finally:
                conn.close()
            ingest_bigquery(path, settings)

        # Both targets at once, each in its own work directory: they must not clash.
        results: dict[str, TransformResult | BaseException] = {}

        def build(target: str) -> None:
            try:
                results[target] = run_dbt(target, settings, work_dir=work / target)
            except BaseException as exc:
                results[target] = exc

        threads = [threading.Thread(target=build, args=(t,)) for t in ("postgres", "bigquery")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for outcome in results.values():
            if isinstance(outcome, BaseException):
                raise outcome
        client = bigquery.Client(
            project="salesmart-local",
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
            client_options={"api_endpoint": emulator.endpoint},
        )
        pg, bq = results["postgres"], results["bigquery"]
        assert isinstance(pg, TransformResult) and isinstance(bq, TransformResult)
        yield Warehouses(settings, pg, bq, work / "bigquery", client)
        client.close()  # type: ignore[no-untyped-call]


def bq_rows(w: Warehouses, sql: str) -> list[tuple[Any, ...]]:
    return [tuple(row.values()) for row in w.client.query(sql).result()]


def pg_rows(w: Warehouses, sql: str) -> list[tuple[Any, ...]]:
    conn = connect(w.settings.database_url)
    try:
        return [tuple(row) for row in conn.run(sql)]
    finally:
        conn.close()


SUMMARY = (
    "SELECT product, sale_month, total_amount, total_quantity, avg_price, transaction_count"
    " FROM {table} ORDER BY product, sale_month"
)


def test_build_and_tests_pass_on_the_stand_in(warehouses: Warehouses) -> None:
    for result in (warehouses.bq, warehouses.pg):
        assert result.success
        assert result.models == 3
        assert result.unit_tests == 6
        assert result.data_tests >= 15
        assert result.failed == ()


def test_summary_equals_the_postgresql_one(warehouses: Warehouses) -> None:
    bq = bq_rows(warehouses, SUMMARY.format(table="transactions_mart.summary_sales"))
    pg = pg_rows(warehouses, SUMMARY.format(table=f"{MART_SCHEMA}.summary_sales"))
    assert len(bq) > 20
    assert bq == pg  # Decimal equality: 249.90 == 249.900000000
    october = {row[0]: row[2] for row in bq if str(row[1]) == "2023-10-01"}
    assert october["Halal Laptop"] >= Decimal("1999.98")
    dates = {(row[0], str(row[1])): row for row in bq}
    assert dates[("Halal Dates", "2023-11-01")][2:] == (
        Decimal("60.03"),
        6,
        Decimal("10.003333333"),  # (10.00 + 10.00 + 10.01) / 3, unweighted, cut after 9
        3,
    )
    # Exact on the stand-in too (its AVG is a float: 8690961.244999999 before).
    assert dates[("Halal Gold", "2021-04-01")][4] == Decimal("8690961.245")
    assert dates[("Halal Gold Bar", "2024-01-01")][4] == Decimal("999999999999999.983333333")
    assert dates[("Halal Tie", "2025-05-01")][4] == Decimal("10.006210937")


def test_fact_sales_holds_masked_ids(warehouses: Warehouses) -> None:
    key = warehouses.settings.pii_key
    bq = bq_rows(
        warehouses,
        "SELECT transaction_id, product, sale_date, price, quantity, amount"
        " FROM transactions_mart.fact_sales ORDER BY transaction_id",
    )
    pg = pg_rows(
        warehouses,
        "SELECT transaction_id, product, sale_date, price, quantity, amount"
        f" FROM {MART_SCHEMA}.pg_sales ORDER BY transaction_id",
    )
    assert bq == pg
    ids = {row[0] for row in bq}
    assert mask("T001", key) in ids and mask("E003", key) in ids
    assert not any(i.startswith(("T0", "E0", "G")) for i in ids)
    e003 = next(row for row in bq if row[0] == mask("E003", key))
    assert e003[3:] == (Decimal("10.01"), 3, Decimal("30.03"))


def test_relations_live_in_their_datasets(warehouses: Warehouses) -> None:
    def tables(dataset: str) -> dict[str, str]:
        return {t.table_id: t.table_type for t in warehouses.client.list_tables(dataset)}

    assert tables("transactions_mart") == {"fact_sales": "TABLE", "summary_sales": "TABLE"}
    assert tables("transactions_warehouse")["stg_transactions"] == "VIEW"
    pg = pg_rows(
        warehouses,
        "SELECT table_schema, table_name FROM information_schema.tables"
        f" WHERE table_schema IN ('{MART_SCHEMA}', 'public', 'staging') ORDER BY 1, 2",
    )
    assert pg == [
        (MART_SCHEMA, "pg_sales"),
        (MART_SCHEMA, "summary_sales"),
        ("staging", "stg_transactions"),
    ]


def test_summary_is_partitioned_by_month_and_clustered_by_product(
    warehouses: Warehouses,
) -> None:
    # The stand-in accepts and ignores these clauses, so check what dbt sent.
    ddl = next((warehouses.bq_work_dir / "target" / "run").rglob("summary_sales.sql"))
    text = " ".join(ddl.read_text().split()).lower()
    assert "partition by date_trunc(sale_month, month)" in text
    assert "cluster by product" in text


def test_summary_column_types_match_postgresqls(warehouses: Warehouses) -> None:
    """Counts are integers, money NUMERIC, on both (the stand-in widened the quantity sum
    to NUMERIC where real BigQuery gives INT64)."""
    table = warehouses.client.get_table("salesmart-local.transactions_mart.summary_sales")
    types = {field.name: field.field_type for field in table.schema}
    assert types["total_quantity"] in ("INTEGER", "INT64")
    assert types["transaction_count"] in ("INTEGER", "INT64")
    assert types["total_amount"] == types["avg_price"] == "NUMERIC"


@pytest.mark.parametrize(
    ("min_price", "decimals"), [("10.0004", 4), ("999999999999999.000000001", 9)]
)
def test_a_precise_minimum_price_flags_the_same_rows_on_both_warehouses(
    warehouses: Warehouses, tmp_path: Path, min_price: str, decimals: int
) -> None:
    """The stand-in kept 3 decimals of the minimum cast from text: under min_price 10.0004
    it compared 10.000 and passed the rows at 10.00 that PostgreSQL flagged (and 12.3455
    flagged valid rows at 12.3455; found by a configuration audit). Near 10^15 with 9
    decimals too (the whole number and the nanos apart)."""
    rules = dataclasses.replace(
        warehouses.settings.validation, min_price=Decimal(min_price), max_decimals=decimals
    )
    settings = dataclasses.replace(warehouses.settings, validation=rules)
    below = pg_rows(
        warehouses,
        f"SELECT count(*) FROM {MART_SCHEMA}.pg_sales WHERE price < {min_price}",
    )[0][0]
    assert 0 < below < pg_rows(warehouses, f"SELECT count(*) FROM {MART_SCHEMA}.pg_sales")[0][0]
    warned = f"test stg_transactions_follow_the_loading_rules (warn, {below} rows)"
    for target in ("postgres", "bigquery"):
        result = run_dbt(target, settings, work_dir=tmp_path / target)
        assert result.success and warned in result.warned, (target, result.warned)


def test_a_row_no_loader_accepts_warns_on_bigquery_too(
    warehouses: Warehouses, tmp_path: Path
) -> None:
    """The loading-rules test compiles and runs on BigQuery (its own string literals): it
    passed on the loaded rows, and warns, by name, on a row slipped into raw with a price
    of three decimals and a lower-case prefix. It changes the raw table: last but one."""
    results = json.loads((warehouses.bq_work_dir / "target" / "run_results.json").read_text())
    statuses = {
        r["unique_id"].split(".")[2]: r["status"]
        for r in results["results"]
        if r["unique_id"].startswith("test.")
    }
    assert statuses["stg_transactions_follow_the_loading_rules"] == "pass"
    warehouses.client.query(
        "INSERT INTO `salesmart-local.transactions_warehouse.raw_transactions` (transaction_id,"
        " masked_transaction_id, product, price, quantity, sale_date, load_id, source_line,"
        " loaded_at) VALUES ('SLIPPED', 'abcdefabcdef', 'halal Tea', NUMERIC '12.505', 1,"
        " DATE '2023-11-03', 1, 99, CURRENT_TIMESTAMP())"
    ).result()
    result = run_dbt("bigquery", warehouses.settings, work_dir=tmp_path)
    assert result.success
    assert "test stg_transactions_follow_the_loading_rules (warn, 1 row)" in result.warned


def test_a_repeated_raw_id_stops_the_dags_staging_step_on_bigquery(
    warehouses: Warehouses, tmp_path: Path
) -> None:
    """BigQuery's raw table has no primary key. A repeated clear id stopped `transform` (the
    source's own test) but not the DAG, whose steps build one model each (cosmos: `dbt
    build --select <model>`, buildable tests) and so never ran a source's tests: the
    summary counted the row twice (an orchestration audit). Last: it changes the raw table."""
    raw = "`salesmart-local.transactions_warehouse.raw_transactions`"
    warehouses.client.query(
        f"INSERT INTO {raw} SELECT * FROM {raw}"
        f" WHERE transaction_id = (SELECT min(transaction_id) FROM {raw})"
    ).result()
    with pytest.raises(TransformError) as stopped:
        run_dbt(
            "bigquery",
            warehouses.settings,
            select="stg_transactions",  # what the DAG's staging step runs
            extra_args=("--indirect-selection", "buildable"),
            work_dir=tmp_path,
        )
    assert "test raw_ids_are_present_and_unique_stg_transactions_ (fail, 1 row)" in str(
        stopped.value
    ), stopped.value
