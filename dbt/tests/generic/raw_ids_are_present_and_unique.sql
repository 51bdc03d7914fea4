{#- Every clear id of the raw area present and unique. Attached to stg_transactions rather
    than to the source: a model's tests run in its own step of the DAG (cosmos builds one
    model at a time and never runs a source's tests), so on BigQuery, where the raw table
    has no primary key, a repeated id stopped `transform` but not the DAG. -#}
{% test raw_ids_are_present_and_unique(model) %}

select transaction_id, count(*) as times
from {{ source('raw', 'transactions') }}
group by transaction_id
having transaction_id is null or count(*) > 1

{% endtest %}
