"""Reading CSV files as the contract says: quoting, line ends, BOM, header rules, raw text."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.config import ValidationRules
from common.masking import mask
from common.wording import LinePlace
from pipeline import csvsource
from pipeline.csvsource import CheckedRow, TransactionReader, UnusableInputError

KEY = "k" * 40
HEADER = "transaction_id,product,price,quantity,date"


def read(tmp_path: Path, content: bytes | str) -> list[CheckedRow]:
    path = tmp_path / "in.csv"
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8", newline="")
    else:
        path.write_bytes(content)
    return list(TransactionReader(path, ValidationRules(), KEY))


def test_crlf_bom_quotes_and_extra_columns(tmp_path: Path) -> None:
    text = (
        "\ufeffdate,quantity,price,product,transaction_id,store\r\n"
        '2023-10-01,2,999.99,"Halal Laptop, 15""",T001,Jakarta\r\n'
        "2023-10-02,10,24.99,Halal Mouse,T002,Bandung\r\n"
    )
    rows = read(tmp_path, text)
    assert [(r.line_number, r.transaction_id, r.product, r.reason) for r in rows] == [
        (2, "T001", 'Halal Laptop, 15"', None),
        (3, "T002", "Halal Mouse", None),
    ]
    assert rows[0].raw_text == '2023-10-01,2,999.99,"Halal Laptop, 15""",T001,Jakarta'
    assert rows[0].masked_transaction_id == mask("T001", KEY)


def test_quoted_line_break_keeps_line_numbers(tmp_path: Path) -> None:
    text = f'{HEADER}\nT1,"Halal\nLamp",12.00,1,2023-01-01\nT2,Halal Pen,12.00,1,2023-01-02\n'
    rows = read(tmp_path, text)
    assert [(r.line_number, r.product) for r in rows] == [(2, "Halal\nLamp"), (4, "Halal Pen")]


def test_mixed_line_ends_and_blank_lines(tmp_path: Path) -> None:
    text = f"{HEADER}\rT1,Halal A,12,1,2023-01-01\r\n\nT2,Halal B,12,1,2023-01-02\n"
    rows = read(tmp_path, text)
    assert [r.transaction_id for r in rows] == ["T1", "T2"]
    assert all(r.reason is None for r in rows)


def test_lines_of_only_spaces_are_blank_lines(tmp_path: Path) -> None:
    # An editor's stray spaces neither hide the header nor count as rows: read = the
    # records, as for empty lines.
    text = (
        f"  \n\t\n{HEADER}\nT1,Halal A,12,1,2023-01-01\n     \n\t\nT2,Halal B,12,1,2023-01-02\n \n"
    )
    rows = read(tmp_path, text)
    assert [(r.line_number, r.transaction_id, r.reason) for r in rows] == [
        (4, "T1", None),
        (7, "T2", None),
    ]
    # Only spaces and tabs: a line of other whitespace or control characters is a row,
    # rejected and kept.
    odd = read(tmp_path, f"{HEADER}\n\x1f\n\u00a0\n\x0c\nT1,Halal A,12,1,2023-01-01\n")
    assert [(r.line_number, r.reason) for r in odd] == [
        (2, "malformed_row"),
        (3, "malformed_row"),
        (4, "malformed_row"),
        (5, None),
    ]


def test_a_row_damaged_by_nuls_is_one_malformed_row_whatever_the_file_size(
    tmp_path: Path,
) -> None:
    # Before: in a short file the NULs made up over 5% of the sniffed bytes, and the whole
    # file was "binary data" (exit 2), while the same row after 300 others was one reject.
    damaged = "V2,Halal " + "\x00" * 16 + ",10,1,2024-06-01\n"
    short = read(
        tmp_path, f"{HEADER}\nV1,Halal Nul,10,1,2024-06-01\n{damaged}V3,Halal A,10,1,2024-06-01\n"
    )
    assert [(r.line_number, r.reason) for r in short] == [
        (2, None),
        (3, "malformed_row"),
        (4, None),
    ]
    padding = "".join(f"P{i},Halal Pen,12,1,2023-01-02\n" for i in range(300))
    long = read(tmp_path, f"{HEADER}\n{padding}{damaged}")
    assert [(r.line_number, r.reason) for r in long[-1:]] == [(302, "malformed_row")]
    # A kilobyte of NULs (a crash's padding) in row 2 is still rows, not a binary file.
    padded = read(tmp_path, f"{HEADER}\nV1,Halal A,10,1,2024-06-01\n" + "\x00" * 1024 + "\n")
    assert [(r.line_number, r.reason) for r in padded] == [(2, None), (3, "malformed_row")]


def test_a_few_control_characters_reject_or_pass_rows_whatever_the_file_size(
    tmp_path: Path,
) -> None:
    # Terminal colour codes pasted into a product: the same row reads the same in a file
    # of one row as in a long one (a small file was called binary before).
    row = "C1,Halal \x1b[1;31mRed\x1b[0m \x1b[1mBold\x1b[0m \x1b[4mU\x1b[0m,10,1,2024-01-01"
    short = read(tmp_path, f"{HEADER}\n{row}\n")
    padding = "".join(f"P{i},Halal Pen,12,1,2023-01-02\n" for i in range(300))
    long = read(tmp_path, f"{HEADER}\n{row}\n{padding}")
    assert short == long[:1]
    assert short[0].reason is None and short[0].product.startswith("Halal \x1b[1;31m")


def test_an_unreadable_file_is_unusable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Fault injected: the suite runs as root in CI, where file modes cannot deny a read, so
    # opening the file is made to fail as it does for a user without permission.
    path = tmp_path / "in.csv"
    path.write_text(f"{HEADER}\nT1,Halal A,12,1,2023-01-01\n")

    def denied(self: Path, *args: object, **kwargs: object) -> object:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "open", denied)
    with pytest.raises(UnusableInputError, match=r"in\.csv: cannot be read \(Permission denied\)"):
        TransactionReader(path, ValidationRules(), KEY)


def test_wrong_field_count_and_unterminated_quote_are_malformed(tmp_path: Path) -> None:
    text = (
        f'{HEADER}\nT1,Halal A,12\nT2,Halal B,12,1,2023-01-01,extra\nT3,"Halal C,12,1,2023-01-01\n'
    )
    rows = read(tmp_path, text)
    assert [(r.line_number, r.reason) for r in rows] == [
        (2, "malformed_row"),
        (3, "malformed_row"),
        (4, "malformed_row"),
    ]
    assert rows[0].raw_text == "T1,Halal A,12"


def test_a_quote_inside_a_field_is_a_plain_character(tmp_path: Path) -> None:
    # Only a quote at the start of a field opens a quoted field (as in Python's csv): an
    # inch mark in a product name must not swallow the rows after it.
    text = (
        f"{HEADER}\n"
        'S1,Halal Monitor 27",10,1,2023-01-01\n'
        "S2,Halal A,10,1,2023-01-01\n"
        'S3,Halal 5" pipe,10,1,2023-01-01\n'
    )
    rows = read(tmp_path, text)
    assert [(r.line_number, r.transaction_id, r.product, r.reason) for r in rows] == [
        (2, "S1", 'Halal Monitor 27"', None),
        (3, "S2", "Halal A", None),
        (4, "S3", 'Halal 5" pipe', None),
    ]
    path = tmp_path / "in.csv"
    assert TransactionReader(path, ValidationRules(), KEY).segments(2) is not None


def test_spaces_around_a_quoted_field_are_trimmed(tmp_path: Path) -> None:
    text = (
        f"{HEADER}\n"
        'Q1, "Halal A" ,10,1,2023-01-01\n'
        'Q2, "Halal, B" , "12.50" , "2" , "2023-01-02" \n'
    )
    rows = read(tmp_path, text)
    assert [(r.transaction_id, r.product, r.price, r.quantity, r.reason) for r in rows] == [
        ("Q1", "Halal A", Decimal(10), 1, None),
        ("Q2", "Halal, B", Decimal("12.50"), 2, None),
    ]
    assert rows[1].raw_text == 'Q2, "Halal, B" , "12.50" , "2" , "2023-01-02" '


def test_a_quote_that_never_closes_rejects_only_its_own_line(tmp_path: Path) -> None:
    text = (
        f"{HEADER}\n"
        'U1,"Halal A,10,1,2023-01-01\n'
        "U2,Halal B,10,1,2023-01-01\n"
        "U3,Halal C,10,1,2023-01-01"
    )
    rows = read(tmp_path, text)
    assert [(r.line_number, r.transaction_id, r.reason) for r in rows] == [
        (2, "", "malformed_row"),
        (3, "U2", None),
        (4, "U3", None),
    ]
    assert rows[0].raw_text == 'U1,"Halal A,10,1,2023-01-01'


def test_text_after_a_closing_quote_makes_the_row_malformed(tmp_path: Path) -> None:
    # Not glued onto the field ("10"5 is not 105): the row is not valid CSV.
    text = (
        f"{HEADER}\n"
        'G1,Halal Tea,"10"5,1,2024-01-05\n'
        'G2,Halal Tea,"1"0,"1"2,"2024-01-0"5\n'
        'G3,"Halal Tea" extra,10,1,2024-01-05\n'
        'G4, "Halal Tea" \t,"10" ,1,2024-01-05\n'  # blanks after a closing quote: trimmed
    )
    rows = read(tmp_path, text)
    assert [(r.line_number, r.transaction_id, r.reason) for r in rows] == [
        (2, "", "malformed_row"),
        (3, "", "malformed_row"),
        (4, "", "malformed_row"),
        (5, "G4", None),
    ]
    assert rows[0].raw_text == 'G1,Halal Tea,"10"5,1,2024-01-05'
    assert (rows[3].product, rows[3].price) == ("Halal Tea", Decimal(10))


def test_a_stray_quote_closing_into_text_rejects_only_its_own_line(tmp_path: Path) -> None:
    # The quote opened on line 2 "closes" on line 4, followed by text: the record it would
    # make is not valid CSV, so the opening quote was a mistake, as for one never closed.
    text = (
        f"{HEADER}\n"
        'A1,"Halal Tea,10,1,2024-01-05\n'
        "A2,Halal Rice,20,2,2024-01-06\n"
        'A3,"Halal Salt",30,3,2024-01-07\n'
    )
    rows = read(tmp_path, text)
    assert [(r.line_number, r.transaction_id, r.product, r.reason) for r in rows] == [
        (2, "", "", "malformed_row"),
        (3, "A2", "Halal Rice", None),
        (4, "A3", "Halal Salt", None),
    ]
    assert rows[0].raw_text == 'A1,"Halal Tea,10,1,2024-01-05'


def test_a_stray_quote_never_swallows_whole_rows_into_a_field(tmp_path: Path) -> None:
    # The quote opened on line 2 would close at the inch mark of line 4 into a well-formed
    # record whose product holds lines 2-4: S2 and S3 would vanish into S1's product. A
    # line that is a whole row on its own is never the inside of a field.
    text = (
        f"{HEADER}\n"
        'S1,"Halal Dates 5kg,15,1,2024-06-01\n'
        "S2,Halal Rice,12,1,2024-06-01\n"
        'S3,Halal Monitor 27",300,1,2024-06-01\n'
        "S4,Halal Tea,11,1,2024-06-01\n"
        'S5,"Halal Dates\n5kg",15,1,2024-06-01\n'  # a field that spans lines still reads
        'S6,"Halal\n\nFigs",15,1,2024-06-01\n'
    )
    rows = read(tmp_path, text)
    assert [(r.line_number, r.transaction_id, r.product, r.reason) for r in rows] == [
        (2, "", "", "malformed_row"),
        (3, "S2", "Halal Rice", None),
        (4, "S3", 'Halal Monitor 27"', None),
        (5, "S4", "Halal Tea", None),
        (6, "S5", "Halal Dates\n5kg", None),
        (8, "S6", "Halal\n\nFigs", None),
    ]
    assert rows[0].raw_text == 'S1,"Halal Dates 5kg,15,1,2024-06-01'
    # Right after the header, with unnamed columns at its end that rows leave out, and the
    # quote closing on the very next line.
    text = f'{HEADER},,\nS1,"Halal Dates,15,1,2024-06-01\nS3,Halal Monitor 27",300,1,2024-06-01\n'
    rows = read(tmp_path, text)
    assert [(r.line_number, r.transaction_id, r.reason) for r in rows] == [
        (2, "", "malformed_row"),
        (3, "S3", None),
    ]


@given(st.lists(st.sampled_from(["a", ",", '"', '""', "\n", "\r\n"]), max_size=10))
def test_a_record_is_well_formed_exactly_when_strict_csv_reads_it(pieces: list[str]) -> None:
    """Without blanks (which the reader trims after a closing quote, and strict csv
    refuses), the check agrees with Python's csv in strict mode on one record."""
    text = "".join(pieces) + "\n"
    try:
        records = list(csv.reader(text.splitlines(keepends=True), strict=True))
        one_record = len(records) == 1
    except csv.Error:
        one_record = False
    assert (csvsource._WELL_FORMED.fullmatch(text) is not None) is one_record


def test_a_quoted_field_spanning_too_many_lines_is_read_again_line_by_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Memory stays bounded: past the limit the opening quote counts as a mistake. The
    # closing quote four lines on then opens a field of its own, which closes in time.
    monkeypatch.setattr(csvsource, "MAX_RECORD_LINES", 3)
    text = (
        f"{HEADER}\n"
        'L1,"Halal A,10,1,2023-01-01\n'
        "L2,Halal B,10,1,2023-01-01\n"
        "L3,Halal C,10,1,2023-01-01\n"
        'L4,"Halal\nD",10,1,2023-01-01\n'
    )
    rows = read(tmp_path, text)
    assert [(r.line_number, r.transaction_id, r.product, r.reason) for r in rows] == [
        (2, "", "", "malformed_row"),
        (3, "L2", "Halal B", None),
        (4, "L3", "Halal C", None),
        (5, "L4", "Halal\nD", None),
    ]


def test_many_unclosed_quotes_each_reject_only_their_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each opening quote is followed by more lines than a field may span before the next
    # quote (which would close it: CSV pairs them), so each is given up on and read again.
    monkeypatch.setattr(csvsource, "MAX_RECORD_LINES", 4)
    lines = [HEADER]
    expected: list[tuple[int, str, str | None]] = []
    for n in range(300):
        expected.append((len(lines) + 1, "", "malformed_row"))
        lines.append(f'B{n},"Halal A,10,1,2023-01-01')
        for k in range(5):
            expected.append((len(lines) + 1, f"G{n}-{k}", None))
            lines.append(f"G{n}-{k},Halal B,10,1,2023-01-01")
    rows = read(tmp_path, "\n".join(lines) + "\n")
    assert [(r.line_number, r.transaction_id, r.reason) for r in rows] == expected


def test_lines_that_never_close_each_other_are_each_rejected_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 'x","' opens a quoted field both read alone and read inside one: no line closes it.
    # Each line read again after a given-up quote is read on its own, so this costs
    # reading the file twice at most, not once per line (found by a review: quadratic).
    monkeypatch.setattr(csvsource, "MAX_RECORD_LINES", 4)
    rows = read(tmp_path, HEADER + "\n" + 'x","\n' * 50 + "T1,Halal A,10,1,2023-01-01\n")
    assert [(r.line_number, r.reason) for r in rows] == [
        *((line, "malformed_row") for line in range(2, 52)),
        (52, None),
    ]
    assert {r.raw_text for r in rows[:-1]} == {'x","'}


def test_a_bom_does_not_hide_a_quoted_header_spanning_lines(tmp_path: Path) -> None:
    text = (
        '\ufeff"note\nsecond line",transaction_id,product,price,quantity,date\n'
        ",T1,Halal A,10,1,2023-01-01\n"
        ",T2,Halal B,10,1,2023-01-01\n"
    )
    rows = read(tmp_path, text)
    assert [(r.line_number, r.transaction_id) for r in rows] == [(3, "T1"), (4, "T2")]
    # Not cut into segments: a segment must not start inside the header.
    assert TransactionReader(tmp_path / "in.csv", ValidationRules(), KEY).segments(2) is None


@pytest.mark.parametrize(
    ("content", "where"),
    [
        (b"h\rt1\rt2,\xff\r", (8, "line 3, byte 4 of the line")),  # a lone CR ends a line too
        (b"h\r\nt1\r\n\xff", (7, "line 3, byte 1 of the line")),
        (b"abc\n\xe2\x82", (4, "line 2, byte 1 of the line")),  # the file ends inside a character
        (  # cut by a block
            b"a" * ((1 << 20) - 1) + "€".encode() + b"\n\xff",
            ((1 << 20) + 3, "line 2, byte 1 of the line"),
        ),
        (  # a CRLF cut by a block is one line end
            b"a" * ((1 << 20) - 1) + b"\r\n\xff",
            ((1 << 20) + 1, "line 2, byte 1 of the line"),
        ),
        (b"ab\xffc", (2, "line 1, byte 3 of the line")),
        ("h\nété\n".encode(), None),
    ],
    ids=["cr", "crlf", "truncated", "across-blocks", "crlf-across-blocks", "first-line", "valid"],
)
def test_the_first_byte_that_is_not_utf8_is_found_with_its_line(
    tmp_path: Path, content: bytes, where: tuple[int, str] | None
) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes(content)
    assert csvsource.first_invalid_utf8(path) == where


@given(st.lists(st.text(alphabet="ab\r\n", max_size=8).map(str.encode), max_size=8))
def test_a_place_fed_in_blocks_is_the_place_read_whole(blocks: list[bytes]) -> None:
    """Where the file's head is read again in blocks, a line end cut between two (CR | LF)
    stays one; counted against lines as Python's text reading splits them (CR, LF, CRLF)."""
    text = b"".join(blocks)
    in_blocks = LinePlace()
    for block in blocks:
        in_blocks.feed(block)
    lines = text.decode().splitlines(keepends=True)
    ends = sum(line.endswith(("\r", "\n")) for line in lines)
    last = lines[-1] if len(lines) > ends else ""
    assert (in_blocks.line_ends, in_blocks.bytes_into_line) == (ends, len(last))


@given(
    st.lists(
        st.tuples(
            st.lists(st.sampled_from(["a", ",", '"', " ", '""']), max_size=12), st.booleans()
        ),
        min_size=1,
        max_size=4,
    )
)
def test_telling_whole_lines_from_open_ones_agrees_with_csv(
    lines: list[tuple[list[str], bool]],
) -> None:
    texts = ["".join(pieces) + ("\r\n" if crlf else "\n") for pieces, crlf in lines]

    class AskedForMore(Exception):
        pass

    def whole(line: str) -> bool:
        def one_line() -> Iterator[str]:
            yield line
            raise AskedForMore

        try:
            next(csv.reader(one_line(), skipinitialspace=True))
        except AskedForMore:
            return False
        return True

    for text in texts:
        assert csvsource._opens_multiline_field(text.encode()) is not whole(text)
    block = "".join(texts).encode()
    every_line_whole = all(whole(text) for text in texts)
    for candidate in (block, block.rstrip(b"\n")):  # the last line may lack its LF
        # Both ways of matching (chosen by how many quotes a block has) agree with csv.
        assert (csvsource._WHOLE_LINES.fullmatch(candidate) is not None) is every_line_whole
        assert csvsource._opens_line_by_line(candidate) is not every_line_whole
        assert csvsource._opens_multiline_field(candidate) is not every_line_whole


@pytest.mark.parametrize(
    "header",
    [
        # The contract's exact name wins; a column named like it in another case is an
        # extra column, ignored like every extra one (before: the file was refused).
        "transaction_id,Product,product,price,quantity,date",
        "transaction_id,product,price,quantity,date,Product",
        # Without the exact name, the one column named so in any case (and spacing) is it.
        " Transaction_ID ,PRODUCT,Price,quantity,Date",
    ],
)
def test_header_names_match_exactly_first_then_in_any_case(tmp_path: Path, header: str) -> None:
    values = {"transaction_id": "T1", "product": "Halal A", "price": "12", "quantity": "3"}
    values["date"] = "2023-01-01"
    # Other columns hold text that would be refused where a required column is read.
    cells = [values.get(name.strip(), "Display name") for name in header.split(",")]
    if "product" not in header:
        cells = ["T1", "Halal A", "12", "3", "2023-01-01"]
    rows = read(tmp_path, f"{header}\n{','.join(cells)}\n")
    assert [(r.reason, r.transaction_id, r.product, r.quantity) for r in rows] == [
        (None, "T1", "Halal A", 3)
    ]


def test_a_required_field_configured_in_another_case_is_the_same_column(tmp_path: Path) -> None:
    # `Product` in the configuration is the product column: found once, by the contract's
    # spelling first. Before, both spellings were looked up, and the validator read the
    # first column named either way (here the display name) as the product.
    path = tmp_path / "in.csv"
    path.write_text(
        "transaction_id,Product,product,price,quantity,date,Store\n"
        "T1,Halal (display),Halal A,12,1,2023-01-01,\n"
        "T2,Halal (display),Halal B,12,1,2023-01-01,Jakarta\n"
    )
    rules = ValidationRules(
        required_fields=(*ValidationRules().required_fields, "Product", "store")
    )
    rows = list(TransactionReader(path, rules, KEY))
    assert [(r.reason, r.product) for r in rows] == [("missing_store", ""), (None, "Halal B")]


def test_a_row_short_only_of_ignored_trailing_columns_is_checked(tmp_path: Path) -> None:
    # Spreadsheets drop empty trailing cells: the extra columns are ignored anyway, so a row
    # that holds every required field is checked like any other. A row cut short inside the
    # required fields, or one with more fields than the header, stays malformed.
    text = (
        f"{HEADER},store,note\n"
        "T1,Halal A,12,1,2023-01-01\n"
        "T2,Halal B,12,1,2023-01-02,Jakarta\n"
        "T3,Halal C,9,1,2023-01-03\n"
        "T4,Halal D,12,1\n"
        "T5,Halal E,12,1,2023-01-05,Jakarta,x,y\n"
    )
    rows = read(tmp_path, text)
    assert [(r.transaction_id or None, r.reason) for r in rows] == [
        ("T1", None),
        ("T2", None),
        (None, "price_below_min"),
        (None, "malformed_row"),
        (None, "malformed_row"),
    ]
    # Required columns after an extra one: a short row lacks a required field's position.
    text = "store,transaction_id,product,price,quantity,date\nJakarta,T6,Halal F,12,1\n"
    assert [r.reason for r in read(tmp_path, text)] == ["malformed_row"]


def test_empty_cells_past_the_headers_end_are_ignored(tmp_path: Path) -> None:
    # Spreadsheets export a trailing comma; a cell past the header with a value is still
    # more fields than the header.
    text = (
        f"{HEADER}\n"
        "T1,Halal A,12,1,2023-01-01,\n"
        "T2,Halal B,12,1,2023-01-02, ,\n"
        "T3,Halal C,12,1,2023-01-03,x\n"
    )
    rows = read(tmp_path, text)
    assert [(r.transaction_id or None, r.reason) for r in rows] == [
        ("T1", None),
        ("T2", None),
        (None, "malformed_row"),
    ]
    assert rows[0].raw_text == "T1,Halal A,12,1,2023-01-01,"


def test_ignored_columns_may_be_unnamed_or_named_twice(tmp_path: Path) -> None:
    text = f"{HEADER},note,note,,\nT1,Halal A,12,1,2023-01-01,a,b,,\nT2,Halal B,12,1,2023-01-02\n"
    rows = read(tmp_path, text)
    assert [(r.transaction_id, r.reason) for r in rows] == [("T1", None), ("T2", None)]


@pytest.mark.parametrize("end", ["\n", "\r\n", "\r"], ids=["lf", "crlf", "cr"])
def test_nul_byte_in_a_row_is_malformed_not_fatal(tmp_path: Path, end: str) -> None:
    content = f"{HEADER}{end}T1,Halal\x00A,12,1,2023-01-01{end}T2,Halal B,12,1,2023-01-01{end}"
    rows = read(tmp_path, content.encode())
    # NUL beyond the sniffed head is a bad row; the rest of the file still loads.
    assert rows[0].reason == "malformed_row"
    assert "\\x00" in rows[0].raw_text
    assert rows[1].reason is None


def test_huge_field_is_handled(tmp_path: Path) -> None:
    big = "Halal " + "x" * 1_000_000
    rows = read(tmp_path, f'{HEADER}\nT1,"{big}",12,1,2023-01-01\nT2,Halal B,12,1,2023-01-01\n')
    # Read whole and rejected (the marts could not index it), its head kept with how much
    # more there was; the next row loads.
    line = f'T1,"{big}",12,1,2023-01-01'
    assert [(r.reason, r.raw_text) for r in rows] == [
        ("product_too_long", f"{line[:65_536]}... [{len(line) - 65_536} more characters not kept]"),
        (None, "T2,Halal B,12,1,2023-01-01"),
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty file"),
        (b"\n\n  \n", "empty file"),
        (
            b"transaction_id,product,price\nT1,Halal A,12\n",
            "missing required column(s) quantity, date",
        ),
        # A header with another separator (a European spreadsheet's CSV, a TSV) was told
        # it might be missing (found by a newcomer audit).
        (
            b"transaction_id;product;price;quantity;date\nS1;Halal S;12,00;1;2024-01-01\n",
            "separates the names with semicolons: save it as CSV with commas",
        ),
        (
            b'"Transaction_ID"\t"Product"\tPrice\tQuantity\tDate\nS1\tHalal S\t12\t1\t2024-01-01\n',
            "the header is not valid CSV (its first line separates the names with tabs",
        ),
        (b"transaction_id\tproduct\tprice\tquantity\tdate\n", "separates the names with tabs"),
        (b"id;name;amount\n1;x;2\n", "names none of them: is the header missing?"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary data"),
        # Before: "binary data", which does not say what to do.
        (f"\ufeff{HEADER}\nT1,Halal A,12,1,2023-01-01\n".encode("utf-16-le"), "UTF-16"),
        (f"{HEADER}\nT1,Halal A,12,1,2023-01-01\n".encode("utf-16"), "UTF-16"),
        (f"{HEADER}\nT1,Halal A,12,1,2023-01-01\n".encode("utf-16-be"), "UTF-16"),
        (f"{HEADER}\nT1,Halal A,12,1,2023-01-01\n".encode("utf-32"), "UTF-16 or UTF-32"),
        (HEADER.encode() + b"\nT1,Halal \xff\xfe,12,1,2023-01-01\n", "not UTF-8"),
        (
            b"transaction_id,product,price,quantity,date, product\n",
            "names column(s) product more than once",
        ),
        (  # neither is the contract's exact name: which one is meant cannot be told
            b"Transaction_ID,Product,PRODUCT,price,quantity,date\n",
            "names column(s) product more than once",
        ),
    ],
)
def test_unusable_files(tmp_path: Path, content: bytes, message: str) -> None:
    with pytest.raises(UnusableInputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read(tmp_path, content)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UnusableInputError, match="no such file"):
        list(TransactionReader(tmp_path / "absent.csv", ValidationRules(), KEY))
