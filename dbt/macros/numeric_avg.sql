{#-
    The mean of a non-negative NUMERIC expression (prices: the loader and a check constraint
    keep them >= 0) as a NUMERIC with 9 decimals, cut (not rounded) after the ninth, on every
    warehouse. For a negative mean the two forms would differ (PostgreSQL's div() cuts toward
    zero, the BigQuery form toward minus infinity).
    Cut, because the APIs round it once more, to cents: a mean rounded at the ninth decimal
    can cross a half cent (10.0049999995 became 10.005000000, shown 10.01 where the mean's
    own rounding is 10.00), whereas a mean cut there stays on its side of every half cent
    (a half cent is a point of the 9-decimal grid), so the cents shown are the exact mean's.
    Neither warehouse's AVG does this: BigQuery's rounds, the local stand-in's is a float
    (8690961.245 came out 8690961.244999999), and PostgreSQL's divides with only about 20
    significant digits (a mean near 10^14 came out 0.0817 where the exact one is
    0.081666667). Both forms below divide whole numbers of nanos exactly.
-#}
{% macro numeric_avg(expression) -%}
    {{ return(adapter.dispatch('numeric_avg')(expression)) }}
{%- endmacro %}

{% macro default__numeric_avg(expression) -%}
    avg({{ expression }})
{%- endmacro %}

{% macro postgres__numeric_avg(expression) -%}
    {#- div() is the exact quotient cut to a whole number; multiplying by 1e-9 is exact too
        (dividing by 10^9 would keep only the scale PostgreSQL picks for a quotient). -#}
    cast(
        div(sum({{ expression }}) * 1000000000, nullif(count({{ expression }}), 0))
        * 0.000000001
        as numeric(38, 9)
    )
{%- endmacro %}

{% macro bigquery__numeric_avg(expression) -%}
    {#- A whole number just below the mean (one below AVG's floor: the stand-in's AVG is a
        float), plus the exact remainder over the count in nanos, cut by integer division
        (a float quotient can land just below a mean on the 9-decimal grid, cut a nano low). `sum(x * 0 + 1)` is
        the count as a NUMERIC, so that multiplying the whole number by it cannot overflow
        INT64; the nanos become NUMERIC by a cast of an integer and a division, as a NUMERIC
        literal, or a cast of a fraction, loses its scale in the stand-in when the query
        reads a view. Real BigQuery is exact throughout. -#}
    {%- set n = 'count(' ~ expression ~ ')' -%}
    {%- set whole = '(cast(floor(avg(' ~ expression ~ ')) as int64) - 1)' -%}
    {%- set rest = '(sum(' ~ expression ~ ') - ' ~ whole ~ ' * sum(' ~ expression ~ ' * 0 + 1))' -%}
    (
        {{ whole }}
        + cast(div(cast({{ rest }} * 1000000000 as int64), {{ n }}) as numeric)
        / 1000000000
    )
{%- endmacro %}
