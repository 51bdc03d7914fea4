{#-
    A text column that sorts (and compares) by its bytes, on every warehouse. BigQuery
    already does; PostgreSQL sorts by the database's collation, which on a managed server is
    usually a language's (en_US: "Halal apple" before "Halal Banana", where BigQuery has the
    reverse), so the trends APIs of the two warehouses would page ties differently. "C" is
    byte order and present on every PostgreSQL; the indexes on the column follow it.
-#}
{% macro byte_ordered(column) -%}
    {{ return(adapter.dispatch('byte_ordered')(column)) }}
{%- endmacro %}

{% macro default__byte_ordered(column) -%}
    {{ column }}
{%- endmacro %}

{% macro postgres__byte_ordered(column) -%}
    {{ column }} collate "C"
{%- endmacro %}
