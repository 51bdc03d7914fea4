{#-
    BigQuery: one partition per month, clustered by product (the trends query filters on
    both); the local stand-in accepts and ignores these, PostgreSQL ignores them.
    PostgreSQL: indexes for the trends query (product prefix, month, ordered by
    total_amount desc then product, limit/offset) and the unique grain.
-#}
{{ config(
    partition_by={'field': 'sale_month', 'data_type': 'date', 'granularity': 'month'},
    cluster_by=['product'],
    post_hook=[
        "{{ pg_index('grain_idx', '(product, sale_month)', unique=true) }}",
        "{{ pg_index('month_amount_idx', '(sale_month, total_amount desc, product)') }}",
        "{{ pg_index('amount_idx', '(total_amount desc, product)') }}",
        "{{ pg_index('product_prefix_idx', '(product text_pattern_ops)') }}",
    ],
) }}

with

transactions as (

    select * from {{ ref('stg_transactions') }}

),

dated as (

    select

        ---------- text
        product,

        ---------- dates
        -- date_trunc gives a timestamp on PostgreSQL and a DATETIME on the BigQuery
        -- stand-in (real BigQuery keeps DATE): cast so sale_month is a DATE everywhere.
        cast({{ dbt.date_trunc('month', 'sale_date') }} as date) as sale_month,

        ---------- numerics
        price,
        quantity,
        amount

    from transactions

),

summarized as (

    select

        ---------- grain
        product,
        sale_month,

        ---------- numerics
        sum(amount) as total_amount,
        -- INT64 on BigQuery, bigint on PostgreSQL (the local stand-in would widen the sum).
        cast(sum(quantity) as {{ dbt.type_bigint() }}) as total_quantity,
        -- Unweighted mean of the unit prices, NUMERIC cut after 9 decimals on both
        -- warehouses (macros/numeric_avg.sql says why the dialects differ).
        {{ numeric_avg('price') }} as avg_price,
        count(*) as transaction_count

    from dated
    group by product, sale_month

),

final as (

    select

        ---------- grain
        -- Stored in byte order on both warehouses (macros/byte_order.sql says why).
        {{ byte_ordered('product') }} as product,
        sale_month,

        ---------- numerics
        total_amount,
        total_quantity,
        avg_price,
        transaction_count

    from summarized

)

select * from final
