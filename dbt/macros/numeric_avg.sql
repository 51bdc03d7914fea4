{#-
    The mean of a NUMERIC expression as a NUMERIC with 9 decimals, on every warehouse.
    BigQuery's AVG on NUMERIC already is exactly that, so it is left alone (a cast there
    would also hit a gap of the local stand-in, which drops decimals when casting through
    a view). PostgreSQL's AVG keeps up to 20 decimals: cast it to NUMERIC's scale, so both
    marts hold the same value.
-#}
{% macro numeric_avg(expression) -%}
    {{ return(adapter.dispatch('numeric_avg')(expression)) }}
{%- endmacro %}

{% macro default__numeric_avg(expression) -%}
    avg({{ expression }})
{%- endmacro %}

{% macro postgres__numeric_avg(expression) -%}
    cast(avg({{ expression }}) as numeric(38, 9))
{%- endmacro %}
