"""``salesmart generate`` under configured loading rules: its valid rows pass them and its
invalid rows break them (it wrote the shipped rules' rows whatever the configuration said:
under min_price 20 a fifth of its "valid" rows were rejected)."""

from __future__ import annotations

import csv
import io
from decimal import Decimal

import pytest

from common.config import ValidationRules
from common.validation import RowValidator, ValidRow
from pipeline.generate import generate

RULE_SETS = [
    ValidationRules(),
    ValidationRules(min_price=Decimal(20), max_quantity=5),
    ValidationRules(min_price=Decimal(5), max_quantity=1000, max_decimals=3),
    ValidationRules(min_price=Decimal("25.555"), max_decimals=0, product_prefix="Org (Bio)+ ä"),
    ValidationRules(min_price=Decimal(0), max_quantity=1, product_prefix="A"),
    ValidationRules(min_price=Decimal("0.5"), max_decimals=9, product_prefix="halal"),
    # A minimum with more decimals than the catalogue's two (a float rounded it below).
    ValidationRules(min_price=Decimal("20.005"), max_decimals=3),
    ValidationRules(min_price=Decimal("99999999999999.99")),
    ValidationRules(min_price=Decimal("1000000.5"), max_decimals=0),
    ValidationRules(min_price=Decimal("999999999999999")),
    # A required column beyond the five: filled in (the file was unusable without it).
    ValidationRules(
        required_fields=("transaction_id", "product", "price", "quantity", "date", "store")
    ),
]


def generated(rules: ValidationRules, invalid_share: float) -> tuple[list[str], list[list[str]]]:
    """The header and the rows."""
    out = io.StringIO()
    generate(out, 3000, seed=3, invalid_share=invalid_share, rules=rules)
    header, *rows = csv.reader(io.StringIO(out.getvalue()))
    return header, rows


@pytest.mark.parametrize("rules", RULE_SETS, ids=repr)
def test_valid_rows_pass_the_configured_rules(rules: ValidationRules) -> None:
    header, rows = generated(rules, 0.0)
    validator = RowValidator(rules, header)
    verdicts = [validator.check(row) for row in rows]
    assert [v for v in verdicts if not isinstance(v, ValidRow)] == []


@pytest.mark.parametrize("rules", RULE_SETS, ids=repr)
def test_invalid_rows_break_the_configured_rules(rules: ValidationRules) -> None:
    header, rows = generated(rules, 1.0)  # none valid: no earlier id to repeat either
    validator = RowValidator(rules, header)
    accepted = [row for row in rows if isinstance(validator.check(row), ValidRow)]
    assert accepted == []
    reasons = {validator.check(row) for row in rows}
    assert len(reasons) >= 8  # every kind of fault, not one


@pytest.mark.parametrize(
    "rules",
    [ValidationRules(min_price=Decimal("1000000.5"), max_decimals=0), ValidationRules()],
    ids=["high-minimum", "shipped"],
)
def test_prices_spread_above_a_high_minimum(rules: ValidationRules) -> None:
    """Under min_price 1000000.5 nearly every row was priced at the minimum (every catalogue
    price was below it; found by a configuration audit): the catalogue is scaled up, so the
    prices spread as the shipped rules' do, from the lowest allowed one."""
    header, rows = generated(rules, 0.0)
    prices = [Decimal(row[header.index("price")]) for row in rows]
    assert min(prices) >= rules.lowest_price
    at_minimum = sum(price == rules.lowest_price for price in prices)
    assert at_minimum < len(prices) / 100
    assert len(set(prices)) > len(prices) / 10
    assert max(prices) / min(prices) > 50  # the catalogue's range, 12.50 to 999.99
