{#- `expression` matches the regular expression `pattern` (a SQL boolean).
    The dialects differ: PostgreSQL has the `~` operator, BigQuery REGEXP_CONTAINS. -#}
{% macro regexp_matches(expression, pattern) -%}
    {{ return(adapter.dispatch('regexp_matches')(expression, pattern)) }}
{%- endmacro %}

{% macro default__regexp_matches(expression, pattern) -%}
    ({{ expression }} ~ '{{ pattern }}')
{%- endmacro %}

{% macro bigquery__regexp_matches(expression, pattern) -%}
    regexp_contains({{ expression }}, r'{{ pattern }}')
{%- endmacro %}
