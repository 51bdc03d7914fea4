{#- The contract's name for the sales fact table on PostgreSQL; `fact_sales` is the same
    model on BigQuery: both are the `sales_fact` macro. -#}
{{ config(
    enabled=target.type == 'postgres',
    post_hook=["{{ pg_index('transaction_id_idx', '(transaction_id)') }}"],
) }}

{{ sales_fact() }}
