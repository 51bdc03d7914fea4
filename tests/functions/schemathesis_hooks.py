"""schemathesis hooks (``SCHEMATHESIS_HOOKS=tests.functions.schemathesis_hooks``).

OpenAPI 3.0 cannot say "min_avg_price <= max_avg_price" (``RANGE_PAIRS``), "a real
calendar date" or "a letter of any script", so schema-valid requests that break those
rules (422 by the contract) are not generated as *valid* ones. (Hooks apply to the
fuzzing phase; the coverage phase ignores them.)
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

import schemathesis

from common.trends import RANGE_PAIRS, is_prefix_char


def _number(value: Any) -> Decimal | None:
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return number if number.is_finite() else None


@schemathesis.hook
def filter_query(context: Any, query: dict[str, Any] | None) -> bool:
    if not query:
        return True
    for low_name, high_name in RANGE_PAIRS:
        low, high = _number(query.get(low_name)), _number(query.get(high_name))
        if low is not None and high is not None and low > high:
            return False
    return _real_month(query.get("sale_month"))


def _real_month(value: Any) -> bool:
    if not isinstance(value, str):
        return True
    parts = value.split("-")
    try:
        numbers = [int(part) for part in parts]
        date(numbers[0], numbers[1], numbers[2] if len(numbers) == 3 else 1)
    except (ValueError, IndexError):
        return len(parts) not in (2, 3)  # not even the pattern's shape: a negative case
    return True


@schemathesis.hook
def map_query(context: Any, query: dict[str, Any] | None) -> dict[str, Any] | None:
    """A generated ``product_prefix`` with characters the rule refuses (punctuation,
    symbols, controls: a 422) has them replaced by a letter; its length is kept, so one too
    long or empty stays a negative case."""
    prefix = query.get("product_prefix") if query else None
    if query is None or not isinstance(prefix, str):
        return query
    letters = "".join(char if is_prefix_char(char) else "a" for char in prefix)
    return {**query, "product_prefix": letters}
