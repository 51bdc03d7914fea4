"""Reading CSV files as the contract says: quoting, line ends, BOM, header rules, raw text."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.config import ValidationRules
from common.masking import mask
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


def test_nul_byte_in_a_row_is_malformed_not_fatal(tmp_path: Path) -> None:
    content = (HEADER + "\nT1,Halal\x00A,12,1,2023-01-01\nT2,Halal B,12,1,2023-01-01\n").encode()
    rows = read(tmp_path, b"x" * 0 + content.replace(b"\n", b"\n", 1))
    # NUL beyond the sniffed head is a bad row; the rest of the file still loads.
    assert rows[0].reason == "malformed_row"
    assert "\\x00" in rows[0].raw_text
    assert rows[1].reason is None


def test_huge_field_is_handled(tmp_path: Path) -> None:
    big = "Halal " + "x" * 1_000_000
    rows = read(tmp_path, f'{HEADER}\nT1,"{big}",12,1,2023-01-01\n')
    assert rows[0].product == big and rows[0].reason is None


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty file"),
        (b"\n\n  \n", "empty file"),
        (
            b"transaction_id,product,price\nT1,Halal A,12\n",
            "missing required column(s) quantity, date",
        ),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary data"),
        (HEADER.encode() + b"\nT1,Halal \xff\xfe,12,1,2023-01-01\n", "not UTF-8"),
        (b"transaction_id,product,product,price,quantity,date\n", "names a column twice"),
    ],
)
def test_unusable_files(tmp_path: Path, content: bytes, message: str) -> None:
    with pytest.raises(UnusableInputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read(tmp_path, content)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UnusableInputError, match="no such file"):
        list(TransactionReader(tmp_path / "absent.csv", ValidationRules(), KEY))
