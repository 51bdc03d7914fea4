{#-
    The column sums to the same total as `expression` over the model `to`: two models that
    must carry the same money (or counts) at different grains. Fails with one row holding
    both totals when they differ. Exact: both sides are NUMERIC or integers.
-#}
{% test sums_match(model, column_name, to, expression) %}

with

this_side as (
    select coalesce(sum({{ column_name }}), 0) as total from {{ model }}
),

other_side as (
    select coalesce(sum({{ expression }}), 0) as total from {{ to }}
)

select
    this_side.total as model_total,
    other_side.total as compared_total
from this_side
cross join other_side
where this_side.total <> other_side.total

{% endtest %}
