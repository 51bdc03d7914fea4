{#-
    The mean of a NUMERIC expression as a NUMERIC with 9 decimals, rounded half away from
    zero, on every warehouse.
    BigQuery's AVG on NUMERIC already is exactly that, but the local stand-in's AVG is a
    float (8690961.245 came out 8690961.244999999, shown a cent low), and a NUMERIC cast or
    literal there loses its scale when the query reads a view; the BigQuery form below is
    exact on both. PostgreSQL's AVG divides with only about 20 significant digits (a mean near
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

{% macro bigquery__numeric_avg(expression) -%}
    {#- A whole number just below the mean (one below AVG's floor: the stand-in's AVG is a
        float), plus the exact remainder over the count in nanos, rounded half up by integer
        division (a float quotient missed ties at the tenth decimal). `sum(x * 0 + 1)` is
        the count as a NUMERIC, so that multiplying the whole number by it cannot overflow
        INT64; the nanos become NUMERIC by a cast of an integer and a division, as a NUMERIC
        literal, or a cast of a fraction, loses its scale in the stand-in when the query
        reads a view. Real BigQuery is exact throughout. -#}
    {%- set n = 'count(' ~ expression ~ ')' -%}
    {%- set whole = '(cast(floor(avg(' ~ expression ~ ')) as int64) - 1)' -%}
    {%- set rest = '(sum(' ~ expression ~ ') - ' ~ whole ~ ' * sum(' ~ expression ~ ' * 0 + 1))' -%}
    (
        {{ whole }}
        + cast(div((2 * cast({{ rest }} * 1000000000 as int64) + {{ n }}), (2 * {{ n }})) as numeric)
        / 1000000000
    )
{%- endmacro %}
