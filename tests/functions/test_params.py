"""The trends parameter rules of CONTRACT.md, one by one, and their normalisation."""

from __future__ import annotations

from datetime import date
from decimal import ROUND_HALF_UP, Decimal

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from werkzeug.datastructures import MultiDict

from common.dashboard import FORM_FIELDS
from common.errors import ValidationFailed
from common.params import TrendParamsSchema, parse_trend_params
from common.trends import (
    BOUND_CAP,
    CENT,
    COMPARISONS,
    MONEY_BOUNDS,
    PARAMETERS,
    RANGE_PAIRS,
    TrendFilters,
    mart_bound,
    shown_value_bound,
)

MONEY = list(MONEY_BOUNDS)


def parse(**args: str) -> TrendFilters:
    return parse_trend_params(MultiDict(args))


def rejected(**args: str) -> dict[str, list[str]]:
    with pytest.raises(ValidationFailed) as caught:
        parse(**args)
    assert caught.value.status == 422
    details = caught.value.details
    assert details is not None
    return details


def test_defaults() -> None:
    assert parse() == TrendFilters(
        product_prefix="Halal",
        sale_month=None,
        min_amount=Decimal(0),
        max_quantity=None,
        min_avg_price=None,
        max_avg_price=None,
        limit=100,
        offset=0,
    )


@pytest.mark.parametrize(
    "prefix",
    [
        "H",
        "Halal",
        "Halal Laptop",
        "Halal-Tea 2",
        "a" * 64,
        "Halal ",
        "Halal Café",  # letters of any script, as the contract says
        "Halal Ünï",
        "حلال",
        "हलाल",  # Devanagari: letters and vowel signs (combining marks)
        "Halal ١٢",  # decimal digits of any script
        "é" * 64,  # 64 characters, not bytes
    ],
)
def test_product_prefix_accepted(prefix: str) -> None:
    assert parse(product_prefix=prefix).product_prefix == prefix


@pytest.mark.parametrize(
    "prefix",
    [
        "",
        "a" * 65,
        "Halal%",
        "Halal_",
        "Hal%al",
        "Halal'; DROP TABLE auth.users; --",
        "Halal' OR '1'='1",
        "Halal\n",
        "Halal\\",
        "Halal\x00",
        "Halal/Tea",
        "Halal\u00a0Tea",  # only the plain space
        "Halal\t",
        "Halal\u200b",  # zero-width space (a format character)
        "Halal½",  # a number, not a decimal digit
        "Halal™",
        "Halal\ud800",
        "é" * 65,
    ],
)
def test_product_prefix_rejected(prefix: str) -> None:
    assert list(rejected(product_prefix=prefix)) == ["product_prefix"]


@pytest.mark.parametrize(
    ("given", "month"),
    [
        ("2023-10", date(2023, 10, 1)),
        ("2023-10-01", date(2023, 10, 1)),
        ("2023-10-31", date(2023, 10, 1)),
        ("2024-02-29", date(2024, 2, 1)),
    ],
)
def test_sale_month_accepted(given: str, month: date) -> None:
    assert parse(sale_month=given).sale_month == month


@pytest.mark.parametrize(
    "given",
    [
        "2023-13",
        "2023-00",
        "2023-1",
        "23-10",
        "2023-02-30",
        "2023-10-1",
        "2023/10",
        "October",
        "2023-10-01T00:00",
        "",
        "0000-01",
        "2023-10' OR 1=1 --",
    ],
)
def test_sale_month_rejected(given: str) -> None:
    assert list(rejected(sale_month=given)) == ["sale_month"]


@pytest.mark.parametrize("name", MONEY)
@pytest.mark.parametrize(
    "given", ["-1", "-0.01", "abc", "NaN", "Infinity", "1e", "", "1,5", "0x10", "1_000", "١٢"]
)
def test_numbers_rejected(name: str, given: str) -> None:
    assert list(rejected(**{name: given})) == [name]


@pytest.mark.parametrize("name", MONEY)
def test_numbers_accepted(name: str) -> None:
    assert getattr(parse(**{name: "0"}), name) == Decimal(0)
    assert getattr(parse(**{name: "12.5"}), name) == Decimal("12.5")
    assert getattr(parse(**{name: "1e3"}), name) == Decimal(1000)


def test_values_reach_the_filters_exactly() -> None:
    filters = parse(min_amount="0.0000000001", min_avg_price="5e-324", max_avg_price="2.29e-32")
    assert filters.min_amount == Decimal("1e-10")
    assert filters.min_avg_price == Decimal("5e-324")
    assert filters.max_avg_price == Decimal("2.29e-32")
    huge = parse(min_amount="1e999999", max_quantity="9" * 40, offset="9" * 40)
    assert huge.min_amount == Decimal("1e999999")
    assert huge.max_quantity == 10**30
    assert huge.offset == 10**30
    # Leading zeros are no size: 31 digits of 0002 are 2 (it was capped to 10**30).
    zeros = parse(max_quantity="0" * 30 + "2", offset="0" * 30 + "5", limit="0" * 30 + "3")
    assert (zeros.max_quantity, zeros.offset, zeros.limit) == (2, 5, 3)
    # Beyond Decimal's exponents: as large, as small, or as zero as the marts can tell.
    beyond = parse(
        min_amount="1e-99999999999999999999",
        min_avg_price="0.0e-99999999999999999999",
        max_avg_price="2.5E+99999999999999999999",
    )
    assert beyond.min_amount is not None and beyond.max_avg_price is not None
    assert 0 < beyond.min_amount < Decimal("1e-999999")
    assert beyond.min_avg_price == 0
    assert beyond.max_avg_price > Decimal("1e999999")
    # Still ordered: min above max is refused, as for any other two numbers.
    crossed = rejected(
        min_avg_price="3e99999999999999999999", max_avg_price="2e99999999999999999999"
    )
    assert list(crossed) == ["min_avg_price"]


@pytest.mark.parametrize("given", ["-1", "1.5", "1e3", "abc", "", "1_0", "٣"])
def test_max_quantity_rejected(given: str) -> None:
    assert list(rejected(max_quantity=given)) == ["max_quantity"]


def test_max_quantity_accepted() -> None:
    assert parse(max_quantity="0").max_quantity == 0
    assert parse(max_quantity="15").max_quantity == 15


def test_every_parameter_is_in_the_schema_the_filters_and_the_dashboards_form() -> None:
    """One list of names (PARAMETERS), in one order: a parameter missing from the form lost
    its value when the form was sent again; one missing from the schema was a 422
    "unknown". (The form has no offset: its pages are links.)"""
    assert list(TrendParamsSchema().fields) == list(PARAMETERS)
    assert [field.name for field in FORM_FIELDS] == [p for p in PARAMETERS if p != "offset"]


def test_every_filter_is_one_comparison_both_warehouses_apply() -> None:
    """A filter in ``TrendFilters`` but not in ``COMPARISONS`` would be parsed and then
    ignored by both queries, unsaid."""
    compared = [comparison.parameter for comparison in COMPARISONS]
    assert sorted(compared) == sorted(set(PARAMETERS) - {"product_prefix", "limit", "offset"})
    kinds = {comparison.parameter: comparison.kind for comparison in COMPARISONS}
    assert kinds == {
        "sale_month": "date",
        "min_amount": "money",
        "max_quantity": "count",
        "min_avg_price": "money",
        "max_avg_price": "money",
    }
    assert [name for name in PARAMETERS if kinds.get(name) == "money"] == MONEY
    assert RANGE_PAIRS == (("min_avg_price", "max_avg_price"),)


@pytest.mark.parametrize(
    ("filters", "values"),
    [
        (TrendFilters(), {"min_amount": Decimal("-0.005")}),  # the others: no filter
        (
            TrendFilters(
                sale_month=date(2024, 2, 1),
                min_amount=Decimal("10.03"),
                max_quantity=2**70,
                min_avg_price=Decimal("1e40"),
                max_avg_price=Decimal("1e41"),
            ),
            {
                "sale_month": date(2024, 2, 1),
                "min_amount": Decimal("10.025"),
                "max_quantity": 2**63 - 1,
                "min_avg_price": BOUND_CAP,  # above every mart value
                "max_avg_price": BOUND_CAP,
            },
        ),
    ],
)
def test_a_comparisons_value_is_the_bound_on_the_exact_mart_value(
    filters: TrendFilters, values: dict[str, object]
) -> None:
    given = {comparison.parameter: comparison.value(filters) for comparison in COMPARISONS}
    assert {name: value for name, value in given.items() if value is not None} == values


@pytest.mark.parametrize(
    ("shown", "lower", "bound"),
    [
        # Totals pass 10^20 with ~1,000 rows of the largest price: the rule held only below.
        ("100000999999999999010.00", True, "100000999999999999009.995"),
        ("100000999999999999010.00", False, "100000999999999999010.004999999"),
        ("107374182349999999999999892.63", True, "107374182349999999999999892.625"),
        (
            "99999999999999999999999999999999999999.99",
            True,
            "99999999999999999999999999999999999999.985",
        ),
        ("1e40", True, "1e40"),  # BOUND_CAP and above: no mart value reaches it
    ],
)
def test_a_bound_on_a_large_shown_total_keeps_the_row_shown(
    shown: str, lower: bool, bound: str
) -> None:
    """A client filtering on a number it was shown gets that row back, however large (an
    audit: min_amount=…010.00 dropped the row shown …010.00, whose exact total …009.995
    was compared with the bound as given)."""
    assert mart_bound(Decimal(shown), lower=lower) == Decimal(bound)


def test_money_past_28_digits_is_rounded_not_refused() -> None:
    from common.api import cents, summary_body

    total = Decimal("100931731408999998990682685.905")
    assert cents(total) == Decimal("100931731408999998990682685.91")
    row = {
        "product": "Halal Huge",
        "sale_month": date(2025, 9, 1),
        "total_amount": total,
        "total_quantity": 100931731409,
        "avg_price": Decimal("999999999999999.99"),
        "transaction_count": 47,
    }
    assert b'"total_amount":100931731408999998990682685.91,' in summary_body([row])


@pytest.mark.parametrize("name", MONEY)
@pytest.mark.parametrize("value", [-1, 2.5, Decimal(-1), Decimal("NaN"), "3"])
def test_filters_refuse_a_money_bound_that_is_no_finite_decimal(name: str, value: object) -> None:
    """Any caller, not only the HTTP layer's schema (an int or float passed unchecked)."""
    with pytest.raises(ValueError, match=f"{name} must be a finite Decimal >= 0"):
        TrendFilters(**{name: value})  # type: ignore[arg-type]


@pytest.mark.parametrize(("low", "high"), RANGE_PAIRS)
def test_a_lower_bound_not_above_its_upper_one(low: str, high: str) -> None:
    assert getattr(parse(**{low: "5", high: "5"}), low) == Decimal(5)
    assert rejected(**{low: "6", high: "5"}) == {low: [f"Must not be greater than {high}."]}
    with pytest.raises(ValueError, match=f"{low} must be <= {high}"):
        TrendFilters(**{low: Decimal(6), high: Decimal(5)})  # type: ignore[arg-type]


def test_min_above_max_reported_beside_other_broken_rules() -> None:
    # Every broken rule in one answer: a client fixes them all at once.
    details = rejected(min_avg_price="6", max_avg_price="5", limit="0", sale_month="2023-13")
    assert sorted(details) == ["limit", "min_avg_price", "sale_month"]
    # A bound that is itself invalid is reported once, for itself, not compared.
    assert sorted(rejected(min_avg_price="x", max_avg_price="5", limit="0")) == [
        "limit",
        "min_avg_price",
    ]


@pytest.mark.parametrize("given", ["0", "1001", "-1", "1.0", "ten", ""])
def test_limit_rejected(given: str) -> None:
    assert list(rejected(limit=given)) == ["limit"]


@pytest.mark.parametrize("given", ["1", "100", "1000"])
def test_limit_accepted(given: str) -> None:
    assert parse(limit=given).limit == int(given)


@pytest.mark.parametrize("given", ["-1", "0.5", "x", ""])
def test_offset_rejected(given: str) -> None:
    assert list(rejected(offset=given)) == ["offset"]


def test_unknown_and_repeated_parameters() -> None:
    assert rejected(product="Halal") == {"product": ["Unknown field."]}
    details = rejected(limit="5", LIMIT="5", sort="product")
    assert set(details) == {"LIMIT", "sort"}
    with pytest.raises(ValidationFailed) as caught:
        parse_trend_params(MultiDict([("limit", "1"), ("limit", "2")]))
    assert caught.value.details == {"limit": ["Given more than once."]}
    # An unknown parameter is unknown however often it is given.
    with pytest.raises(ValidationFailed) as caught:
        parse_trend_params(MultiDict([("foo", "1"), ("foo", "2"), ("limit", "1")]))
    assert caught.value.details == {"foo": ["Unknown field."]}


def test_every_broken_rule_is_reported_at_once() -> None:
    details = rejected(limit="0", offset="-1", sale_month="x", product_prefix="%", extra="1")
    assert set(details) == {"limit", "offset", "sale_month", "product_prefix", "extra"}
    # A repeated parameter does not hide the others' problems.
    args = MultiDict([("limit", "1"), ("limit", "2"), ("foo", "1"), ("offset", "-5")])
    with pytest.raises(ValidationFailed) as caught:
        parse_trend_params(args)
    details = dict(caught.value.details or {})
    assert details["limit"] == ["Given more than once."]
    assert set(details) == {"limit", "foo", "offset"}
    assert all(isinstance(m, str) for messages in details.values() for m in messages)


def test_empty_form_fields_are_absent_for_the_dashboard() -> None:
    args = MultiDict({"product_prefix": "", "sale_month": "", "limit": "5"})
    filters = parse_trend_params(args, drop_empty=True)
    assert filters.product_prefix == "Halal"
    assert filters.sale_month is None
    assert filters.limit == 5
    # Spaces are a value, judged as the APIs judge it (the dashboard takes the same rules).
    with pytest.raises(ValidationFailed) as spaces:
        parse_trend_params(MultiDict({"sale_month": " "}), drop_empty=True)
    assert set(spaces.value.details or {}) == {"sale_month"}
    # Only the filters' blanks: an unknown parameter is refused, blank or not.
    for unknown in ({"foo": ""}, {"foo": " ", "limit": ""}):
        with pytest.raises(ValidationFailed) as caught:
            parse_trend_params(MultiDict(unknown), drop_empty=True)
        assert set(caught.value.details or {}) == {"foo"}


def test_a_repeated_query_is_validated_once_and_a_bad_one_every_time() -> None:
    from common.params import _parsed

    _parsed.cache_clear()
    args = MultiDict([("product_prefix", "Halal"), ("limit", "5")])
    first = parse_trend_params(args)
    again = parse_trend_params(MultiDict([("product_prefix", "Halal"), ("limit", "5")]))
    assert again is first and first.limit == 5
    assert _parsed.cache_info().hits == 1
    bad = MultiDict([("limit", "0")])
    for _ in range(2):
        with pytest.raises(ValidationFailed):
            parse_trend_params(bad)
    assert _parsed.cache_info().currsize == 1  # failures are not kept
    long_valid = MultiDict([("min_amount", "0." + "0" * 5000 + "1")])
    assert parse_trend_params(long_valid).min_amount == Decimal("1e-5001")
    assert _parsed.cache_info().currsize == 1  # nor long queries: memory, not speed
    repeated = MultiDict([("limit", "5"), ("limit", "6")])
    with pytest.raises(ValidationFailed) as caught:
        parse_trend_params(repeated)
    assert caught.value.details == {"limit": ["Given more than once."]}


# Mart values: at most 9 decimals, never negative; bounds: any non-negative number.
MART_VALUES = st.decimals(min_value=0, max_value=10**6, places=9)
BOUNDS = st.one_of(
    st.decimals(min_value=0, max_value=10**6, places=12),
    st.decimals(min_value=0, max_value=10**6, places=2),
)


@given(exact=MART_VALUES, bound=BOUNDS)
@example(exact=Decimal("10.025"), bound=Decimal("10.03"))  # the edges of "shown 10.03"
@example(exact=Decimal("10.024999999"), bound=Decimal("10.03"))
@example(exact=Decimal("10.034999999"), bound=Decimal("10.03"))
@example(exact=Decimal("10.035"), bound=Decimal("10.03"))
@example(exact=Decimal("10.025"), bound=Decimal("10.025"))
@example(exact=Decimal("0"), bound=Decimal("0"))
def test_a_bound_on_the_shown_value_selects_as_the_shown_value_would(
    exact: Decimal, bound: Decimal
) -> None:
    shown = exact.quantize(CENT, rounding=ROUND_HALF_UP)
    assert (exact >= shown_value_bound(bound, lower=True)) == (shown >= bound)
    assert (exact <= shown_value_bound(bound, lower=False)) == (shown <= bound)
