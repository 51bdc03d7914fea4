{#- The loading rules (data/pipeline_config.yaml, ingestion.validation) as one SQL condition
    on a row of stg_transactions. `salesmart transform` passes the configured thresholds;
    a run by hand gets the defaults of common/config.py's ValidationRules (a test holds the
    two alike). -#}
{% macro loading_rules_hold() -%}
    {%- set prefix = env_var('SALESMART_RULE_PRODUCT_PREFIX', 'Halal') -%}
    {#- min_price rounded up to max_decimals: at most 9 decimals, and the same rule for a
        price with no more decimals than that. -#}
    {%- set lowest_price = env_var('SALESMART_RULE_LOWEST_PRICE', '10.00') -%}
    {%- set max_decimals = env_var('SALESMART_RULE_MAX_DECIMALS', '2') | int -%}
    {%- set max_quantity = env_var('SALESMART_RULE_MAX_QUANTITY', '100') | int -%}
    {%- if not modules.re.fullmatch('[0-9]+([.][0-9]{1,9})?', lowest_price) -%}
        {{ exceptions.raise_compiler_error('SALESMART_RULE_LOWEST_PRICE is not a plain decimal of at most 9 decimals: ' ~ lowest_price) }}
    {%- endif -%}
    {%- set whole = lowest_price.split('.')[0] -%}
    {%- set nanos = ((lowest_price.split('.') + [''])[1] ~ '000000000')[:9] | int -%}
    {#- A string literal as each warehouse reads it (BigQuery also takes backslash escapes). -#}
    {%- set quoted = prefix | replace("'", "''") -%}
    {%- if target.type == 'bigquery' -%}
        {%- set quoted = prefix | replace('\\', '\\\\') | replace("'", "\\'") -%}
    {%- endif -%}
    starts_with(product, '{{ quoted }}')
    {%- if target.type == 'bigquery' %}
    {#- The local stand-in keeps 3 decimals of a NUMERIC cast from text (12.3455 became
        12.346, flagging valid rows): a whole number and nanos over 10^9 keep them all. #}
    and price >= cast({{ whole }} as numeric) + cast({{ nanos }} as numeric) / 1000000000
    {%- else %}
    and price >= cast('{{ lowest_price }}' as numeric)
    {%- endif %}
    and price = round(price, {{ max_decimals }})
    and quantity between 1 and {{ max_quantity }}
{%- endmacro %}
