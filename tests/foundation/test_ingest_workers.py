"""The fast paths of loading must not change a single result: the whole-line check against
the field-by-field one, segments read in parallel against one sequential read, and a load
through worker processes against a load in one process."""

from __future__ import annotations

import random
import threading
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common import validation as v
from common.config import Settings, ValidationRules
from common.pg import connect
from pipeline import ingest
from pipeline.csvsource import TransactionReader, UnusableInputError
from pipeline.generate import generate

KEY = "k" * 40
HEADER = "transaction_id,product,price,quantity,date"
RULES = ValidationRules()
_TEXT = st.text(alphabet=list("09.-:Ta \t\\é"), max_size=12)
FIELD = st.one_of(
    _TEXT,
    _TEXT.map(lambda text: "Halal" + text),
    st.from_regex(r"[0-9]{1,4}(\.[0-9]{0,3})?", fullmatch=True),
    st.dates().map(str),
)


@given(st.lists(FIELD, min_size=5, max_size=5), st.permutations(v.CORE_COLUMNS))
@settings(max_examples=400)
def test_whole_line_check_agrees_with_field_check(fields: list[str], order: list[str]) -> None:
    validator = v.RowValidator(RULES, order)
    text = ",".join(fields)
    fast = validator.check_line(text)
    if fast is not None:
        assert fast == validator.check(text.split(","))


@pytest.mark.parametrize(
    "line",
    [
        "T1,Halal Laptop,999.99,2,2023-10-01",
        "T1,Halal,10,1,2024-02-29",
        "T1,Halal Laptop,9.99,2,2023-10-01",
        "T1,Halal Laptop,19.99,0,2023-10-01",
        "T1,Halal Laptop,19.99,101,2023-10-01",
        "T1,Halal Laptop,19.99,2,2023-02-30",
        "x" * 128 + ",Halal A,10,1,2023-01-01",
    ],
)
def test_whole_line_check_decides_canonical_lines(line: str) -> None:
    validator = v.RowValidator(RULES)
    assert validator.check_line(line) == validator.check(line.split(","))


@pytest.mark.parametrize(
    "line",
    [
        " T1,Halal Laptop,999.99,2,2023-10-01",
        "T1,Halal Laptop ,999.99,2,2023-10-01",
        "T1,Halal Laptop,19.999,2,2023-10-01",
        "T1,Monitor,19.99,2,2023-10-01",
        "T1,Halal\\A,19.99,2,2023-10-01",
        "x" * 129 + ",Halal A,10,1,2023-01-01",
        "T1,Halal A,10,1",
    ],
)
def test_whole_line_check_leaves_the_rest_to_the_field_check(line: str) -> None:
    assert v.RowValidator(RULES).check_line(line) is None


def test_no_whole_line_check_for_other_headers_or_padded_prefixes() -> None:
    assert v.RowValidator(RULES, [*v.CORE_COLUMNS, "store"]).check_line("a,b,c,d,e,f") is None
    padded = ValidationRules(product_prefix="Halal ")
    assert v.RowValidator(padded).check_line("T1,Halal ,10,1,2023-01-01") is None


def _messy_file(path: Path, rows: int) -> None:
    """Generated rows plus blank lines, quoted fields, CRLF ends, and no final newline."""
    generate(path, rows, seed=3, id_prefix="W")
    lines = path.read_text().splitlines()
    rng = random.Random(5)
    out = [lines[0]]
    for line in lines[1:]:
        choice = rng.random()
        if choice < 0.05:
            tid, product, rest = line.split(",", 2)
            line = f'{tid},"{product}, boxed ""XL""",{rest}'
        elif choice < 0.07:  # a quote inside a field is a plain character
            tid, product, rest = line.split(",", 2)
            line = f'{tid},{product} 27",{rest}'
        elif choice < 0.09:  # spaces around a quoted field
            tid, product, rest = line.split(",", 2)
            line = f'{tid}, "{product}" ,{rest}'
        elif choice < 0.12:
            out.append("")
        elif choice < 0.13:  # a line of only spaces is blank too
            out.append(" \t ")
        out.append(line)
    text = "\r\n".join(out[: len(out) // 2]) + "\r\n" + "\n".join(out[len(out) // 2 :])
    path.write_text("\ufeff" + text, encoding="utf-8", newline="")


@pytest.mark.parametrize("parts", [1, 2, 3, 7])
def test_segments_read_exactly_what_one_pass_reads(tmp_path: Path, parts: int) -> None:
    path = tmp_path / "messy.csv"
    _messy_file(path, 3000)
    expected = list(TransactionReader(path, RULES, KEY).copy_rows())
    reader = TransactionReader(path, RULES, KEY)
    segments = reader.segments(parts)
    assert segments is not None and 1 <= len(segments) <= parts
    assert [row for segment in segments for row in reader.copy_rows(segment)] == expected


@pytest.mark.parametrize(
    "body",
    [
        'T1,"Halal\nLamp",12.00,1,2023-01-01\n',
        "T1,Halal A,12,1,2023-01-01\rT2,Halal B,12,1,2023-01-01\n",
        'T1,Halal 5" pipe,"Halal\nLamp",12.00,1,2023-01-01\n',
    ],
    ids=["multi-line-field", "lone-cr", "even-quotes-one-open"],
)
def test_files_that_need_one_pass_are_not_segmented(tmp_path: Path, body: str) -> None:
    path = tmp_path / "in.csv"
    path.write_text(f"{HEADER}\n{body}", encoding="utf-8", newline="")
    assert TransactionReader(path, RULES, KEY).segments(2) is None


def _tables(settings: Settings) -> tuple[list[list[object]], list[list[object]]]:
    conn = connect(settings.database_url)
    try:
        loaded = conn.run(
            "SELECT transaction_id, masked_transaction_id, product, price::text, quantity,"
            " sale_date::text, source_line FROM raw.transactions ORDER BY source_line"
        )
        rejected = conn.run(
            "SELECT line_number, raw_text, reason FROM raw.rejected_transactions"
            " ORDER BY line_number"
        )
        conn.run("TRUNCATE raw.transactions, raw.rejected_transactions, raw.loads")
        return list(loaded), list(rejected)
    finally:
        conn.close()


@pytest.mark.parametrize("messy", [False, True], ids=["plain", "quoted-crlf"])
def test_workers_load_exactly_what_one_process_loads(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, messy: bool
) -> None:
    path = tmp_path / "in.csv"
    if messy:
        _messy_file(path, 4000)
    else:
        generate(path, 4000, seed=11, id_prefix="P")
    # A duplicate of the first row across the segments' boundary, needing COPY escapes.
    first_id = path.read_text(encoding="utf-8-sig").splitlines()[1].split(",")[0]
    with path.open("a", encoding="utf-8", newline="") as handle:
        handle.write(f"\n{first_id},Halal Tab\\Back,12.00,1,2023-01-01\n")
    monkeypatch.setattr(ingest, "PARALLEL_MIN_BYTES", 0)
    one = ingest.ingest_postgres(connect(settings.database_url), path, settings, workers=1)
    expected = _tables(settings)
    many = ingest.ingest_postgres(connect(settings.database_url), path, settings, workers=3)
    assert _tables(settings) == expected
    assert (many.read, many.loaded, many.rejected_by_reason) == (
        one.read,
        one.loaded,
        one.rejected_by_reason,
    )
    assert one.rejected_by_reason["duplicate_transaction_id"] >= 1
    assert any("Tab\\Back" in str(row[1]) for row in expected[1])


def test_a_worker_finding_an_unusable_file_loads_nothing(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "bad.csv"
    generate(path, 3000, seed=2, id_prefix="U")
    with path.open("ab") as handle:
        handle.write(b"U9,Halal \xff,12.00,1,2023-01-01\n")
    monkeypatch.setattr(ingest, "PARALLEL_MIN_BYTES", 0)
    with pytest.raises(UnusableInputError, match="not UTF-8"):
        ingest.ingest_postgres(connect(settings.database_url), path, settings, workers=2)
    assert _tables(settings) == ([], [])


@pytest.mark.parametrize(
    ("price", "expected"),
    [("10.005", None), ("10.004", v.PRICE_BELOW_MIN), ("10.01", None), ("10", v.PRICE_BELOW_MIN)],
)
def test_prices_next_to_the_minimum_are_decided_exactly(price: str, expected: str | None) -> None:
    rules = ValidationRules(min_price=Decimal("10.005"), max_decimals=3)
    validator = v.RowValidator(rules)
    line = f"T1,Halal A,{price},1,2023-01-01"
    result = validator.check_line_text(line)
    assert result == (expected or ("T1", "Halal A", price, "1", "2023-01-01"))
    assert validator.check(line.split(",")) == (expected or validator.check_line(line))


def test_remembered_dates_give_the_same_answers() -> None:
    validator = v.RowValidator(RULES)
    for _ in range(3):
        assert validator.check_line_text("T1,Halal A,10,1,2023-02-29") == v.INVALID_DATE
        assert validator.check_line_text("T1,Halal A,10,1,2024-02-29") is not None
        assert validator.check_line_text("T1,Halal A,10,1,2024-02-29") != v.INVALID_DATE


def test_concurrent_loads_take_turns_and_never_load_an_id_twice(
    settings: Settings, tmp_path: Path
) -> None:
    # Two files sharing half their ids, loaded at the same time from two threads.
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    rows = [f"C{n:05d},Halal A,12.00,1,2023-01-01" for n in range(3000)]
    first.write_text("\n".join([HEADER, *rows[:2000]]) + "\n")
    second.write_text("\n".join([HEADER, *rows[1000:]]) + "\n")
    results: dict[str, ingest.IngestResult] = {}

    def load(path: Path) -> None:
        results[path.name] = ingest.ingest_postgres(connect(settings.database_url), path, settings)

    threads = [threading.Thread(target=load, args=(path,)) for path in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert sorted(results) == ["a.csv", "b.csv"]
    assert sum(r.loaded for r in results.values()) == 3000
    assert sum(r.rejected_by_reason["duplicate_transaction_id"] for r in results.values()) == 1000
    loaded, rejected = _tables(settings)
    assert len(loaded) == 3000 and len({row[0] for row in loaded}) == 3000
    assert len(rejected) == 1000


def test_one_file_loaded_twice_at_once_is_recorded_once(settings: Settings, tmp_path: Path) -> None:
    # The same file from two threads at the same moment: the second waits for the first's
    # turn to end, finds its content loaded, and records nothing (no rejects kept twice).
    path = tmp_path / "same.csv"
    rows = [f"S{n:05d},Halal A,12.00,1,2023-01-01" for n in range(2000)]
    path.write_text("\n".join([HEADER, *rows, "S99999,Monitor,12.00,1,2023-01-01"]) + "\n")
    results: list[ingest.IngestResult] = []

    def load() -> None:
        results.append(ingest.ingest_postgres(connect(settings.database_url), path, settings))

    threads = [threading.Thread(target=load) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert sorted(r.already_loaded for r in results) == [False, True]
    assert [(r.read, r.loaded + r.rejected) for r in results] == [(2001, 2001)] * 2
    assert sorted(r.loaded for r in results) == [0, 2000]
    loaded, rejected = _tables(settings)
    assert len(loaded) == 2000
    assert len(rejected) == 1  # the one bad row, once
