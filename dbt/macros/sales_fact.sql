{#- The sales fact table, one row per valid transaction: the body of `pg_sales`
    (PostgreSQL) and `fact_sales` (BigQuery), written once. -#}
{% macro sales_fact() %}
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
        amount

    from transactions

)

select * from sales
{% endmacro %}
