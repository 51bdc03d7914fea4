with

source as (

    select * from {{ source('raw', 'transactions') }}

),

renamed as (

    select

        ----------  ids
        -- Only the masked id goes on: the clear id never leaves the raw area.
        masked_transaction_id as transaction_id,

        ---------- text
        product,

        ---------- numerics
        price,
        quantity,

        ---------- dates
        sale_date,

        ---------- lineage
        load_id,
        source_line,
        loaded_at

    from source

),

derived as (

    select

        *,

        ---------- numerics
        -- NUMERIC x integer stays exact NUMERIC on both warehouses; computed once, here,
        -- for both marts.
        price * quantity as amount

    from renamed

)

select * from derived
