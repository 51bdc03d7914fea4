"""The row rules of CONTRACT.md "Input data", one reason at a time (pure, no database)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common import validation as v
from common.config import ValidationRules

RULES = ValidationRules()
VALID = {
    "transaction_id": "T1",
    "product": "Halal Laptop",
    "price": "999.99",
    "quantity": "2",
    "date": "2023-10-01",
}


def checked(rules: ValidationRules, fields: dict[str, str]) -> v.ValidRow | str:
    """The validator's verdict on one row, given as column name -> field."""
    return v.RowValidator(rules, list(fields)).check(list(fields.values()))


def check(**changes: str) -> v.ValidRow | str:
    return checked(RULES, {**VALID, **changes})


def test_valid_row_is_parsed_exactly() -> None:
    assert check() == v.ValidRow("T1", "Halal Laptop", Decimal("999.99"), 2, date(2023, 10, 1))


def test_fields_are_trimmed() -> None:
    row = check(
        transaction_id="  T1 ",
        product=" Halal Mouse  ",
        price=" 24.99",
        quantity=" 10 ",
        date=" 2023-10-02 ",
    )
    assert row == v.ValidRow("T1", "Halal Mouse", Decimal("24.99"), 10, date(2023, 10, 2))


@pytest.mark.parametrize("field", ["transaction_id", "product", "price", "quantity", "date"])
@pytest.mark.parametrize("blank", ["", "   "])
def test_missing_field(field: str, blank: str) -> None:
    assert check(**{field: blank}) == f"missing_{field}"


@pytest.mark.parametrize("product", ["Monitor", "halal Mouse", "HALAL Laptop", "Mouse Halal"])
def test_product_prefix_is_case_sensitive(product: str) -> None:
    assert check(product=product) == v.PRODUCT_PREFIX


@pytest.mark.parametrize(
    "price",
    ["abc", "-10.00", "+10.00", "1e3", "NaN", "inf", ".50", "12,50", "0x10", "10 .5", "١٠", "10.."],
)
def test_price_must_be_a_plain_decimal(price: str) -> None:
    assert check(price=price) == v.INVALID_PRICE


@pytest.mark.parametrize(("price", "expected"), [("10.", "10"), ("0012.", "12"), ("1.", None)])
def test_a_price_may_end_with_its_point(price: str, expected: str | None) -> None:
    """The contract's "digits, optionally a point and at most N decimals": zero too."""
    result = check(price=price)
    if expected is None:
        assert result == v.PRICE_BELOW_MIN
    else:
        assert isinstance(result, v.ValidRow) and str(result.price) == expected
    # The fast path leaves it to ``check`` (its texts must already be canonical).
    assert v.RowValidator(RULES).check_line(f"T1,Halal A,{price},1,2023-01-01") in (None, result)


@pytest.mark.parametrize(
    ("price", "expected"),
    [
        ("0000000000000000012.50", Decimal("12.50")),
        ("999999999999999.99", Decimal("999999999999999.99")),
        ("1000000000000000", v.INVALID_PRICE),  # 16 digits: beyond what is accepted
        ("00000000000000000009.99", v.PRICE_BELOW_MIN),
    ],
)
def test_leading_zeros_do_not_count_towards_a_prices_digits(
    price: str, expected: Decimal | str
) -> None:
    result = check(price=price)
    assert (result.price if isinstance(result, v.ValidRow) else result) == expected
    line = f"T1,Halal A,{price},1,2023-01-01"
    validator = v.RowValidator(RULES)
    fast = validator.check_line(line)
    assert fast is None or fast == validator.check(line.split(","))


@pytest.mark.parametrize(
    ("minimum", "price", "valid"),
    [
        # Within a float's rounding of the minimum: 100000000000000.00 and .01 are one float.
        ("100000000000000.01", "100000000000000.00", False),
        ("100000000000000.01", "100000000000000.01", True),
        ("10.000000001", "10.000000000", False),
        ("10.000000001", "10.000000001", True),
    ],
)
def test_the_fast_path_decides_a_minimum_a_float_cannot_tell_exactly(
    minimum: str, price: str, valid: bool
) -> None:
    """The line check's float comparison hands a price within rounding distance of the
    minimum to an exact Decimal one; without it, a price a cent below a minimum near 10^15
    was accepted (an audit found no test failing with that comparison gone)."""
    rules = ValidationRules(min_price=Decimal(minimum), max_decimals=9)
    validator = v.RowValidator(rules)
    fast = validator.check_line_text(f"T1,Halal A,{price},1,2023-01-01")
    assert fast is not None  # decided here, not handed to the field-by-field check
    assert (fast != v.PRICE_BELOW_MIN) is valid
    assert (fast == v.PRICE_BELOW_MIN) == (
        checked(rules, {**VALID, "price": price}) == v.PRICE_BELOW_MIN
    )


def test_price_decimals_limit() -> None:
    assert check(price="19.999") == v.TOO_MANY_DECIMALS
    assert isinstance(check(price="19.9"), v.ValidRow)


@pytest.mark.parametrize(
    ("price", "ok"), [("9.99", False), ("10", True), ("10.00", True), ("0", False)]
)
def test_min_price_is_inclusive(price: str, ok: bool) -> None:
    assert isinstance(check(price=price), v.ValidRow) is ok
    if not ok:
        assert check(price=price) == v.PRICE_BELOW_MIN


@pytest.mark.parametrize("quantity", ["two", "1.5", "-1", "+1", "1e2", "٣"])
def test_quantity_must_be_a_plain_integer(quantity: str) -> None:
    assert check(quantity=quantity) == v.INVALID_QUANTITY


@pytest.mark.parametrize(
    ("quantity", "ok"),
    [
        ("0", False),
        ("1", True),
        ("100", True),
        ("101", False),
        ("0000000000001", True),  # a plain integer, however many leading zeros
        ("0" * 5000 + "100", True),  # beyond int()'s digit limit, still exact
        ("0" * 20, False),
        ("1" + "0" * 5000, False),
    ],
    ids=lambda value: value if len(str(value)) < 20 else f"{len(value)}-chars",
)
def test_quantity_range(quantity: str, ok: bool) -> None:
    result = check(quantity=quantity)
    assert isinstance(result, v.ValidRow) is ok
    if not ok:
        assert result == v.QUANTITY_OUT_OF_RANGE


@pytest.mark.parametrize(
    "day",
    [
        "2023-02-30",
        "2023/10/01",
        "01-10-2023",
        "2023-13-01",
        "2023-1-01",
        "20231001",
        "2023-10-01T00:00",
    ],
)
def test_date_must_be_a_valid_iso_date(day: str) -> None:
    assert check(date=day) == v.INVALID_DATE


def test_overlong_transaction_id_is_rejected() -> None:
    assert check(transaction_id="T" * 200) == v.INVALID_TRANSACTION_ID


@pytest.mark.parametrize(("extra", "expected"), [(494, None), (495, v.PRODUCT_TOO_LONG)])
def test_a_product_the_marts_could_not_index_is_rejected(extra: int, expected: str | None) -> None:
    """500 characters at most (the marts' btree indexes on product hold ~2.7 kB; 3,000
    characters once broke every later dbt build, found by a review)."""
    product = "Halal " + "x" * extra
    result = check(product=product)
    assert (None if isinstance(result, v.ValidRow) else result) == expected
    line = f"T1,{product},12,1,2023-01-01"
    validator = v.RowValidator(RULES)
    assert validator.check_line(line) == validator.check(line.split(","))


def test_thresholds_come_from_the_rules() -> None:
    rules = ValidationRules(
        min_price=Decimal("1"), max_quantity=5, max_decimals=3, product_prefix="Organic"
    )
    row = {**VALID, "product": "Organic Tea", "price": "1.125", "quantity": "5"}
    assert isinstance(checked(rules, row), v.ValidRow)
    assert checked(rules, {**row, "quantity": "6"}) == v.QUANTITY_OUT_OF_RANGE
    assert checked(rules, {**row, "product": "Halal Tea"}) == v.PRODUCT_PREFIX


@given(
    st.decimals(
        min_value=Decimal("10"),
        max_value=Decimal("999999999"),
        places=2,
        allow_nan=False,
        allow_infinity=False,
    )
)
def test_any_plain_two_decimal_price_at_or_above_min_is_kept_exactly(price: Decimal) -> None:
    result = check(price=f"{price:.2f}")
    assert isinstance(result, v.ValidRow)
    assert result.price == price


@given(st.text(max_size=12))
def test_validator_never_raises(text: str) -> None:
    for field in VALID:
        assert check(**{field: text}) is not None
