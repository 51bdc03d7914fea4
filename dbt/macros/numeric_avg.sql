{#-
    The mean of a NUMERIC expression as a NUMERIC with 9 decimals, rounded half away from
    zero, on every warehouse.
    BigQuery's AVG on NUMERIC already is exactly that, so it is left alone (a cast there
    would also hit a gap of the local stand-in, which drops decimals when casting through
    a view). PostgreSQL's AVG divides with only about 20 significant digits (a mean near
    10^14 came out 0.0817 where the exact one is 0.081666667): the sum is given NUMERIC's 9
    decimals first, so the division is carried out, and rounded, at that scale.
-#}
{% macro numeric_avg(expression) -%}
    {{ return(adapter.dispatch('numeric_avg')(expression)) }}
{%- endmacro %}

{% macro default__numeric_avg(expression) -%}
    avg({{ expression }})
{%- endmacro %}

{% macro postgres__numeric_avg(expression) -%}
    cast(
        cast(sum({{ expression }}) as numeric(38, 9)) / nullif(count({{ expression }}), 0)
        as numeric(38, 9)
    )
{%- endmacro %}
