{#- The contract's name for the sales fact table on BigQuery; `pg_sales` is the same
    model on PostgreSQL (keep the two SQL bodies identical). -#}
{{ config(enabled=target.type == 'bigquery') }}

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
