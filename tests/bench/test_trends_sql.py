"""The benchmark's database floor runs trends_pg's own statement under pgbench."""

from __future__ import annotations

from decimal import Decimal

from bench.load import trends_sql
from common.trends import TrendFilters
from common.trends_pg import summary_json_statement


def test_pgbench_runs_the_functions_statement_with_its_values() -> None:
    filters = TrendFilters(limit=5, offset=10**30, min_avg_price=Decimal("10.5"))
    sql, variables = trends_sql("public", filters)
    statement, params = summary_json_statement("public", filters)
    # Absent filters are NULL literals, present ones pgbench variables, as the function
    # binds them (its cap on the offset included).
    assert variables == {name: str(value) for name, value in params.items() if value is not None}
    assert variables["offset"] == str(2**63 - 1)
    for name, value in params.items():
        assert (f":{name}" in sql) is (value is not None), name
    assert "CAST(NULL AS date)" in sql and sql.endswith(") AS page;\n")
    assert len(sql.split()) == len(statement.split())  # the statement, less its line breaks
