"""What the DAG's tasks run, without Airflow: the landing ingest, the mart check, the dbt
wrapper. Real PostgreSQL and real dbt; GCS through a stand-in client object."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from common.config import ConfigError, Settings
from pipeline.checks import MartCounts, check_marts, compare, require_fresh
from pipeline.dbt_wrapper import target_of
from pipeline.landing import (
    UnusableLandingFiles,
    gcs_files,
    ingest_landing,
    is_landing_file,
    local_files,
)
from pipeline.postgres_embedded import EmbeddedPostgres
from pipeline.transform import run_dbt
from tests.conftest import run_cli, scalar

HEADER = "transaction_id,product,price,quantity,date\n"
FILE_A = HEADER + "A1,Halal Dates,12.50,2,2023-10-01\nA2,Halal Honey,30.00,1,2023-10-15\n"
FILE_B = HEADER + "B1,Halal Laptop,999.99,2,2023-10-01\nB2,Halal Tea,11.00,1,x\n"


# -- the landing folder --------------------------------------------------------------------
def test_landing_files_are_csv_below_the_folder_in_name_order(tmp_path: Path) -> None:
    (tmp_path / "b.csv").write_text(FILE_B)
    (tmp_path / "a.CSV").write_text(FILE_A)
    (tmp_path / "2023" / "10").mkdir(parents=True)
    (tmp_path / "2023" / "10" / "c.csv").write_text(FILE_A)
    (tmp_path / "notes.txt").write_text("not data")
    (tmp_path / ".d.csv").write_text(FILE_A)  # hidden: an upload in progress
    (tmp_path / "_e.csv").write_text(FILE_A)  # marker / partial
    (tmp_path / "_tmp").mkdir()
    (tmp_path / "_tmp" / "f.csv").write_text(FILE_A)
    found = [p.relative_to(tmp_path).as_posix() for p in local_files(tmp_path)]
    assert found == ["2023/10/c.csv", "a.CSV", "b.csv"]
    assert is_landing_file("x/y.csv") and not is_landing_file("x/_SUCCESS")


def test_a_missing_landing_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"landing folder .*nowhere does not exist"):
        local_files(tmp_path / "nowhere")
    a_file = tmp_path / "good.csv"  # a file given as the folder: it exists, as a file
    a_file.write_text(FILE_A)
    with pytest.raises(ConfigError, match=r"landing folder .*good\.csv is not a folder"):
        local_files(a_file)


def test_new_files_are_loaded_once_by_content(settings: Settings, tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "a.csv").write_text(FILE_A)
    (landing / "b.csv").write_text(FILE_B)
    settings = dataclasses.replace(settings, landing=str(landing))
    lines: list[str] = []

    results = ingest_landing(settings, ["postgres"], say=lines.append)
    assert [(Path(r.source_file).name, r.read, r.loaded, r.rejected) for r in results] == [
        ("a.csv", 2, 2, 0),
        ("b.csv", 2, 1, 1),
    ]
    assert scalar(settings, "SELECT count(*) FROM raw.transactions") == 3

    # Nothing new: nothing loaded, and a renamed copy is recognised by its content.
    (landing / "a-copy.csv").write_text(FILE_A)
    lines.clear()
    assert ingest_landing(settings, ["postgres"], say=lines.append) == []
    assert sum("already loaded" in line for line in lines) == 3, lines
    assert scalar(settings, "SELECT count(*) FROM raw.loads") == 2
    assert scalar(settings, "SELECT count(*) FROM raw.rejected_transactions") == 1


def test_an_unusable_file_fails_after_the_others_are_loaded(
    settings: Settings, tmp_path: Path
) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "a.csv").write_text("transaction_id,product\nA1,Halal Dates\n")  # columns
    (landing / "b.csv").write_text(FILE_B)
    settings = dataclasses.replace(settings, landing=str(landing))
    with pytest.raises(UnusableLandingFiles, match=r"1 landing file.*a\.csv"):
        ingest_landing(settings, ["postgres"])
    assert scalar(settings, "SELECT count(*) FROM raw.loads WHERE finished_at IS NOT NULL") == 1

    # The command: the one-line reason and exit 2 (the DAG does not retry those).
    done = run_cli(
        settings, tmp_path, "ingest-landing", "--landing", str(landing), "--target", "postgres"
    )
    assert done.returncode == 2, done.stderr
    assert "b.csv -> postgres: already loaded" in done.stdout
    assert (
        done.stderr.startswith("salesmart: 1 landing file(s) unusable") and "a.csv" in done.stderr
    )
    assert "Traceback" not in done.stderr


# -- a GCS landing prefix ------------------------------------------------------------------
@dataclasses.dataclass
class FakeBlob:
    name: str
    data: bytes
    downloads: list[str]

    @property
    def md5_hash(self) -> str:
        return base64.b64encode(hashlib.md5(self.data, usedforsecurity=False).digest()).decode()

    def download_to_filename(self, filename: str) -> None:
        self.downloads.append(self.name)
        Path(filename).write_bytes(self.data)


@dataclasses.dataclass
class FakeClient:
    """The two calls ``gcs_files`` makes on a ``google.cloud.storage.Client``."""

    blobs: dict[str, bytes]
    downloads: list[str] = dataclasses.field(default_factory=list)
    listed: list[tuple[str, str | None]] = dataclasses.field(default_factory=list)

    def list_blobs(self, bucket: str, prefix: str | None = None) -> list[FakeBlob]:
        self.listed.append((bucket, prefix))
        return [
            FakeBlob(name, data, self.downloads)
            for name, data in self.blobs.items()
            if name.startswith(prefix or "")
        ]


def test_gcs_objects_are_downloaded_once_and_refreshed_when_changed(
    settings: Settings, tmp_path: Path
) -> None:
    client = FakeClient(
        {
            "in/2023/b.csv": FILE_B.encode(),
            "in/a.csv": FILE_A.encode(),
            "in/_SUCCESS": b"",
            "in/_temporary/0/part-0000.csv": FILE_A.encode(),
            "in/.staging/x.csv": FILE_A.encode(),
            "in/readme.txt": b"x",
            "in/dir/": b"",
            "other/c.csv": FILE_A.encode(),
        }
    )
    files = gcs_files("gs://bucket/in/", tmp_path, settings, client)
    assert client.listed == [("bucket", "in/")]
    assert [f.path.relative_to(tmp_path).as_posix() for f in files] == [
        "gs/bucket/in/2023/b.csv",
        "gs/bucket/in/a.csv",
    ]
    assert [f.name for f in files] == ["gs://bucket/in/2023/b.csv", "gs://bucket/in/a.csv"]
    assert files[1].path.read_text() == FILE_A
    assert client.downloads == ["in/2023/b.csv", "in/a.csv"]

    # Unchanged objects come from the cache; a changed one is fetched again.
    client.blobs["in/a.csv"] = FILE_B.encode()
    client.downloads.clear()
    files = gcs_files("gs://bucket/in/", tmp_path, settings, client)
    assert client.downloads == ["in/a.csv"]
    assert files[1].path.read_text() == FILE_B


@pytest.mark.parametrize("uri", ["gs://bucket/in", "gs://bucket/in/", "gs://bucket/"])
def test_gcs_objects_in_dot_or_underscore_folders_are_left_alone(
    settings: Settings, tmp_path: Path, uri: str
) -> None:
    """As in a local landing folder: a Spark or Hadoop job writes under ``_temporary/``
    until it commits, and an aborted attempt's parts would be loaded for good."""
    client = FakeClient(
        {
            "in.csv": FILE_A.encode(),
            "in/_temporary/0/part-0000.csv": FILE_A.encode(),
            "in/.staging/x.csv": FILE_A.encode(),
            "in/2023/b.csv": FILE_B.encode(),
        }
    )
    names = [f.name for f in gcs_files(uri, tmp_path, settings, client)]
    expected = ["gs://bucket/in/2023/b.csv"]
    assert names == (["gs://bucket/in.csv", *expected] if uri != "gs://bucket/in/" else expected)


@pytest.mark.parametrize(
    ("uri", "folder"),
    [
        ("gs://bucket/_in", "_in"),
        ("gs://bucket/_in/", "_in"),
        ("gs://bucket/data/_landing", "data/_landing"),
        ("gs://bucket/.landing/", ".landing"),
    ],
)
def test_a_gcs_landing_folder_may_itself_start_with_dot_or_underscore(
    settings: Settings, tmp_path: Path, uri: str, folder: str
) -> None:
    """Only folders below the one the prefix names hide objects, as with a local
    ``--landing /data/_landing``: the named folder is the operator's choice."""
    client = FakeClient(
        {
            f"{folder}/a.csv": FILE_A.encode(),
            f"{folder}/2023/b.csv": FILE_B.encode(),
            f"{folder}/_temporary/0/part-0000.csv": FILE_A.encode(),
        }
    )
    names = [f.name for f in gcs_files(uri, tmp_path, settings, client)]
    assert names == [f"gs://bucket/{folder}/2023/b.csv", f"gs://bucket/{folder}/a.csv"]


def test_a_file_without_header_is_not_quoted_anywhere(
    settings: Settings, pg_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    # Its first line is data (a clear id) or, through a link, anything: neither the
    # command's line nor the database server's log may quote it. A file name cannot break
    # or rewrite an output line either.
    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "noheader.csv").write_text("SECRETID42,Halal Dates,12.50,3,2023-12-02\n")
    (landing / "x\n[INFO] all files loaded OK\x1b[2K.csv").write_text(FILE_A)
    done = run_cli(
        settings, tmp_path, "ingest-landing", "--landing", str(landing), "--target", "postgres"
    )
    assert done.returncode == 2
    assert "is the header missing?" in done.stderr
    assert "secretid42" not in (done.stdout + done.stderr).lower()
    assert "secretid42" not in pg_server.log_file.read_text().lower()
    assert "\x1b" not in done.stdout + done.stderr
    assert not [line for line in done.stdout.splitlines() if line.startswith("[INFO]")]
    assert "x\\n[INFO] all files loaded OK\\x1b[2K.csv -> postgres: read 2, loaded 2" in (
        done.stdout
    )


def test_gcs_landing_through_ingest_landing(settings: Settings, tmp_path: Path) -> None:
    """Loads, rejects and messages name the object, not the local copy it was read from."""
    client = FakeClient(
        {
            "drop/a.csv": FILE_A.encode(),
            "drop/b.csv": FILE_B.encode(),
            "drop/c.csv": b"transaction_id,product\nC1,Halal Dates\n",  # columns missing
        }
    )
    settings = dataclasses.replace(
        settings, landing="gs://bucket/drop", state_dir=tmp_path / "state"
    )
    lines: list[str] = []
    with pytest.raises(UnusableLandingFiles) as unusable:
        ingest_landing(settings, ["postgres"], say=lines.append, client=client)
    assert str(unusable.value).endswith(
        "unusable, the others were loaded: gs://bucket/drop/c.csv: missing required column(s)"
        " price, quantity, date (found: transaction_id, product)"
    )
    assert (tmp_path / "state" / "landing" / "gs" / "bucket" / "drop" / "a.csv").is_file()
    assert (
        "gs://bucket/drop/b.csv -> postgres: read 2, loaded 1, rejected 1 (invalid_date 1)" in lines
    )
    assert not [line for line in lines if str(tmp_path) in line], lines
    assert (
        scalar(
            settings,
            "SELECT count(*) FROM raw.loads WHERE source_file IN"
            " ('gs://bucket/drop/a.csv', 'gs://bucket/drop/b.csv')",
        )
        == scalar(settings, "SELECT count(*) FROM raw.loads")
        == 2
    )
    assert (
        scalar(
            settings,
            "SELECT count(*) FROM raw.rejected_transactions"
            " WHERE source_file = 'gs://bucket/drop/b.csv'",
        )
        == scalar(settings, "SELECT count(*) FROM raw.rejected_transactions")
        == 1
    )

    lines.clear()
    with pytest.raises(UnusableLandingFiles):
        ingest_landing(settings, ["postgres"], say=lines.append, client=client)
    assert lines[1].startswith("gs://bucket/drop/a.csv -> postgres: already loaded"), lines


@pytest.fixture
def gcs_emulator() -> Iterator[str]:
    """A GCS stand-in (gcp-storage-emulator, in memory) with an empty bucket ``landing``."""
    from gcp_storage_emulator.server import create_server  # type: ignore[import-untyped]

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket="landing")
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def test_a_gcs_prefix_through_the_command_and_the_real_client(
    settings: Settings, tmp_path: Path, gcs_emulator: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator)  # honoured by the GCS client
    from google.cloud.storage import Client

    bucket = Client(project="test").bucket("landing")
    bucket.blob("drop/2023/a.csv").upload_from_string(FILE_A)
    bucket.blob("drop/b.csv").upload_from_string(FILE_B)
    bucket.blob("drop/_SUCCESS").upload_from_string("")
    bucket.blob("drop/_temporary/0/part-0000.csv").upload_from_string(FILE_A)
    bucket.blob("elsewhere/c.csv").upload_from_string(FILE_A)
    args = ("ingest-landing", "--landing", "gs://landing/drop", "--target", "postgres")

    done = run_cli(settings, tmp_path, *args, STORAGE_EMULATOR_HOST=gcs_emulator)
    assert done.returncode == 0, done.stderr
    assert "landing gs://landing/drop: 2 file(s)" in done.stdout
    assert "drop/2023/a.csv -> postgres: read 2, loaded 2, rejected 0" in done.stdout
    assert "drop/b.csv -> postgres: read 2, loaded 1, rejected 1" in done.stdout
    cached = tmp_path / "state" / "landing" / "gs" / "landing" / "drop" / "b.csv"
    assert cached.read_text() == FILE_B

    # Again: nothing new; an object replaced in place is new content, and is loaded.
    bucket.blob("drop/b.csv").upload_from_string(FILE_B.replace("B1,", "B9,"))
    done = run_cli(settings, tmp_path, *args, STORAGE_EMULATOR_HOST=gcs_emulator)
    assert done.returncode == 0, done.stderr
    assert "drop/2023/a.csv -> postgres: already loaded" in done.stdout
    assert "drop/b.csv -> postgres: read 2, loaded 1, rejected 1" in done.stdout
    assert scalar(settings, "SELECT count(*) FROM raw.transactions") == 4


@pytest.mark.parametrize("uri", ["gs://", "gs:///x", "gs:/bucket"])
def test_bad_gcs_uris_are_refused(settings: Settings, tmp_path: Path, uri: str) -> None:
    with pytest.raises(ConfigError):
        gcs_files(uri, tmp_path, settings, FakeClient({}))


def test_gcs_object_names_cannot_leave_the_cache(settings: Settings, tmp_path: Path) -> None:
    client = FakeClient({"in/../../escape.csv": FILE_A.encode()})
    with pytest.raises(ConfigError, match="unsafe name"):
        gcs_files("gs://bucket/in/", tmp_path / "cache", settings, client)
    assert not (tmp_path / "escape.csv").exists()


# -- the mart check ------------------------------------------------------------------------
def test_check_marts_fails_until_the_marts_move(settings: Settings, tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "a.csv").write_text(FILE_A)
    settings = dataclasses.replace(settings, landing=str(landing), state_dir=tmp_path / "state")
    ingest_landing(settings, ["postgres"])

    # Never built: the marts do not exist.
    [check] = check_marts(settings, ["postgres"])
    assert not check.ok and "pg_sales does not exist" in check.problems[0]

    run_dbt("postgres", settings, work_dir=tmp_path / "dbt")
    [check] = check_marts(settings, ["postgres"])
    assert check.ok, check.problems
    assert check.summary().startswith("postgres: raw 2 rows (amount 55.00), pg_sales 2 rows")
    require_fresh([check])

    # New rows land but dbt does not run: the marts did not move, the check fails.
    (landing / "b.csv").write_text(FILE_B)
    ingest_landing(settings, ["postgres"])
    [check] = check_marts(settings, ["postgres"])
    assert "pg_sales has 2 rows, raw has 3" in check.problems
    assert "summary_sales counts 2 transactions, raw has 3" in check.problems
    assert any("1 of the 1 rows of the newest load" in p for p in check.problems)
    done = run_cli(settings, tmp_path, "check-marts", "--target", "postgres")
    assert done.returncode == 1
    # The problems once, in the target's line; the last line says where (it repeated them).
    assert "pg_sales has 2 rows, raw has 3" in done.stdout
    assert done.stderr == (
        "salesmart: the marts do not match the raw area on postgres (`salesmart transform`"
        " builds them again from it)\n"
    )

    # After the build they match again; a run with nothing new passes as well.
    run_dbt("postgres", settings, work_dir=tmp_path / "dbt")
    done = run_cli(settings, tmp_path, "check-marts", "--target", "postgres")
    assert done.returncode == 0, done.stderr
    assert ": ok" in done.stdout


def test_check_marts_reads_a_mart_schema_named_like_a_keyword(
    settings: Settings, tmp_path: Path
) -> None:
    """dbt, trends_pg and the dashboard quote the schema; check-marts did not, and stopped
    on a syntax error for a schema named "order" (the DAG's last task always failed; found
    by a configuration audit)."""
    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "a.csv").write_text(FILE_A)
    settings = dataclasses.replace(
        settings, landing=str(landing), state_dir=tmp_path / "state", mart_schema="order"
    )
    ingest_landing(settings, ["postgres"])
    [check] = check_marts(settings, ["postgres"])
    assert check.problems == ("order.pg_sales does not exist (has dbt build run?)",)
    run_dbt("postgres", settings, work_dir=tmp_path / "dbt")
    [check] = check_marts(settings, ["postgres"])
    assert check.ok, check.problems
    assert check.summary().startswith("postgres: raw 2 rows (amount 55.00), pg_sales 2 rows")


# 10.00 in raw and summary_sales, 9.00 in the sales mart (one difference); newest load 7.
CONSISTENT_BUT_SALES = MartCounts(
    raw_rows=3,
    raw_amount=Decimal("10.00"),
    sales_rows=3,
    sales_amount=Decimal("9.00"),
    summary_transactions=3,
    summary_amount=Decimal("10.00"),
    latest_load_id=7,
    latest_load_rows=1,
    latest_load_missing=0,
    latest_load_at=None,
)


def test_compare_names_every_difference() -> None:
    counts = CONSISTENT_BUT_SALES
    assert compare("bigquery", counts).problems == ("fact_sales amounts to 9.00, raw to 10.00",)
    # BigQuery's NUMERIC comes with 9 decimals: shown like PostgreSQL's (it printed 9.000000000).
    nine = dataclasses.replace(
        counts, raw_amount=Decimal("10.000000000"), sales_amount=Decimal("9.000000000")
    )
    check = compare("bigquery", nine)
    assert check.problems == ("fact_sales amounts to 9.00, raw to 10.00",)
    assert (check.as_dict()["raw_amount"], check.as_dict()["sales_amount"]) == ("10.00", "9.00")
    same = dataclasses.replace(counts, sales_amount=Decimal("10.000"))
    assert compare("postgres", same).ok  # NUMERIC scale does not matter, the value does


def test_amounts_past_28_digits_are_shown_whole() -> None:
    """An audit: a total past 10^26 stopped check-marts with "[<class
    'decimal.InvalidOperation'>]", and a 34-digit one was shown rounded to 28 digits, so a
    real difference read as two equal numbers."""
    raw = Decimal("2147512670137192917674624.778516356")
    counts = dataclasses.replace(
        CONSISTENT_BUT_SALES,
        raw_amount=raw,
        sales_amount=Decimal("2147512670137192917674624.778616356"),
        summary_amount=Decimal("100931731408999998990682685.91"),
    )
    check = compare("postgres", counts)
    assert check.as_dict()["raw_amount"] == "2147512670137192917674624.778516356"
    assert check.as_dict()["sales_amount"] == "2147512670137192917674624.778616356"
    assert check.as_dict()["summary_amount"] == "100931731408999998990682685.91"
    assert "raw to 2147512670137192917674624.778516356" in check.problems[0]


def test_the_newest_loads_time_is_shown_in_utc_for_both_warehouses() -> None:
    """PostgreSQL answers in its session's time zone, BigQuery in UTC: the two lines of one
    run showed different clocks for the same moment, without saying so."""
    from datetime import UTC, datetime, timedelta, timezone

    moment = datetime(2024, 3, 1, 23, 30, tzinfo=UTC)
    counts = dataclasses.replace(
        CONSISTENT_BUT_SALES,
        sales_amount=Decimal("10.00"),
        latest_load_at=moment.astimezone(timezone(timedelta(hours=5, minutes=30))),
    )
    in_utc = dataclasses.replace(counts, latest_load_at=moment)
    for check in (compare("postgres", counts), compare("bigquery", in_utc)):
        assert "newest load 7 at 2024-03-01 23:30:00 UTC: 1 rows" in check.summary()
        assert check.as_dict()["latest_load_at"] == "2024-03-01 23:30:00 UTC"


# -- salesmart-dbt -------------------------------------------------------------------------
def test_target_is_read_from_dbt_arguments() -> None:
    assert target_of(["build", "--select", "x", "--target", "bigquery"]) == "bigquery"
    assert target_of(["run", "--target=postgres"]) == "postgres"
    assert target_of(["ls", "-t", "postgres"]) == "postgres"
    assert target_of(["--version"]) is None


def test_salesmart_dbt_runs_dbt_with_the_connection_settings(
    settings: Settings, tmp_path: Path
) -> None:
    fake = tmp_path / "dbt"
    fake.write_text(
        "#!/bin/sh\n"
        'echo "ARGS $*"\n'
        'echo "HOST=$SALESMART_PG_HOST DB=$SALESMART_PG_DBNAME"'
        ' "URL=${SALESMART_DATABASE_URL:-none}"\n'
        'echo "PII=${SALESMART_PII_KEY:-none} PASSWORD=${DBT_ENV_SECRET_PG_PASSWORD:+set}"\n'
    )
    fake.chmod(0o755)
    env: dict[str, Any] = {
        **os.environ,
        "SALESMART_DBT": str(fake),
        "SALESMART_DATABASE_URL": settings.database_url,
        "SALESMART_STATE_DIR": str(tmp_path / "state"),
    }
    args = ["build", "--select", "pg_sales", "--target", "postgres"]
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.dbt_wrapper", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    database = settings.database_url.rsplit("/", 1)[1]
    assert done.stdout.splitlines() == [
        "ARGS build --select pg_sales --target postgres",
        f"HOST=127.0.0.1 DB={database} URL=none",
        "PII=none PASSWORD=set",
    ]

    # No PostgreSQL configured: one line, no dbt.
    env.pop("SALESMART_DATABASE_URL")
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.dbt_wrapper", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.startswith("salesmart-dbt: no PostgreSQL to transform")
    assert "ARGS" not in done.stdout

    # A deployment's task (SALESMART_ENV=prod, as the Airflow values set) refuses the short
    # database password the functions refuse, as every command does: no dbt.
    short = "postgresql://someone:short@" + settings.database_url.split("@", 1)[1]
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.dbt_wrapper", *args],
        env={**env, "SALESMART_ENV": "prod", "SALESMART_DATABASE_URL": short},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.startswith(
        "salesmart-dbt: SALESMART_DATABASE_URL has a password of only 5 bytes"
    ), done.stderr
    assert "ARGS" not in done.stdout
