{#- The contract's name for the sales fact table on PostgreSQL; `fact_sales` is the same
    model on BigQuery (keep the two SQL bodies identical). -#}
{{ config(
    enabled=target.type == 'postgres',
    post_hook=["{{ pg_index('transaction_id_idx', '(transaction_id)', unique=true) }}"],
) }}

with

transactions as (

    select * from {{ ref('stg_transactions') }}

),

sales as (

    select

        ----------  ids
        transaction_id,

        ---------- text
        product,

        ---------- dates
        sale_date,

        ---------- numerics
        price,
        quantity,
        -- NUMERIC x integer stays exact NUMERIC on both warehouses.
        price * quantity as amount

    from transactions

)

select * from sales
