{#-
    A post-hook creating a named index on the model's table, on PostgreSQL only (BigQuery
    has no indexes: it gets partitioning and clustering instead; there this renders nothing
    and the hook is skipped).

    dbt's table materialization swaps the new table in and only drops the old one (renamed
    `<name>__dbt_backup`) after COMMIT; the old table still holds the index name then. So
    the old index gives up the name first, inside the same transaction, and readers see the
    new table with its indexes at once. `definition` is raw SQL: columns with DESC or an
    operator class, which dbt's own `indexes` config cannot express by name.
-#}
{% macro pg_index(suffix, definition, unique=false) -%}
    {%- if target.type == 'postgres' -%}
        {%- set name = this.identifier ~ '_' ~ suffix -%}
        {%- set old = this.incorporate(path={'identifier': name}) -%}
        alter index if exists {{ old }} rename to {{ adapter.quote(name ~ '__dbt_backup') }};
        create {{ 'unique ' if unique }}index {{ adapter.quote(name) }} on {{ this }} {{ definition }}
    {%- endif -%}
{%- endmacro %}
