{#- The loading rules (data/pipeline_config.yaml, ingestion.validation) as one SQL condition
    on a row of stg_transactions. `salesmart transform` passes the configured thresholds;
    a run by hand gets the defaults of common/config.py's ValidationRules (a test holds the
    two alike). -#}
{% macro loading_rules_hold() -%}
    {%- set prefix = env_var('SALESMART_RULE_PRODUCT_PREFIX', 'Halal') -%}
    {%- set min_price = env_var('SALESMART_RULE_MIN_PRICE', '10.0') -%}
    {%- set max_decimals = env_var('SALESMART_RULE_MAX_DECIMALS', '2') | int -%}
    {%- set max_quantity = env_var('SALESMART_RULE_MAX_QUANTITY', '100') | int -%}
    {%- if not modules.re.fullmatch('[0-9]+([.][0-9]+)?', min_price) -%}
        {{ exceptions.raise_compiler_error('SALESMART_RULE_MIN_PRICE is not a plain decimal: ' ~ min_price) }}
    {%- endif -%}
    {#- A string literal as each warehouse reads it (BigQuery also takes backslash escapes). -#}
    {%- set quoted = prefix | replace("'", "''") -%}
    {%- if target.type == 'bigquery' -%}
        {%- set quoted = prefix | replace('\\', '\\\\') | replace("'", "\\'") -%}
    {%- endif -%}
    starts_with(product, '{{ quoted }}')
    and price >= cast('{{ min_price }}' as numeric)
    and price = round(price, {{ max_decimals }})
    and quantity between 1 and {{ max_quantity }}
{%- endmacro %}
