{#- The contract's name for the sales fact table on BigQuery; `pg_sales` is the same
    model on PostgreSQL: both are the `sales_fact` macro. -#}
{{ config(enabled=target.type == 'bigquery') }}

{{ sales_fact() }}
