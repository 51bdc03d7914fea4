{#-
    Schemas are named exactly as configured (`staging`, `public`, `transactions_mart`, ...),
    not dbt's default `<target schema>_<custom schema>`: the functions, the ingest and the
    contract all refer to these fixed names.
-#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema | trim }}
    {%- else -%}
        {{ custom_schema_name | trim }}
    {%- endif -%}
{%- endmacro %}
