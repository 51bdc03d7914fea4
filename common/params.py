"""Request validation (marshmallow 4); each function's OpenAPI 3 document is built from
these schemas in ``common.openapi`` (apispec), on first request only.

The trends parameters follow the contract's table of them; unknown or repeated parameters
and broken rules give 422 with ``details`` per field. Valid values reach ``TrendFilters``
exactly as given (integers of more than 30 digits become 10^30); each warehouse adapter
fits them to its own types (``common.trends_pg``, ``common.bigquery``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Collection, Mapping
from datetime import date
from decimal import MAX_EMAX, Decimal, InvalidOperation
from typing import Any

from werkzeug.datastructures import MultiDict

from common.errors import ValidationFailed
from common.lazy_regex import import_deferring_regexes
from common.trends import (
    DEFAULT_LIMIT,
    DEFAULT_PRODUCT_PREFIX,
    MAX_LIMIT,
    MAX_PREFIX_CHARS,
    PARAMETERS,
    RANGE_PAIRS,
    TrendFilters,
    is_prefix_char,
)

# Before marshmallow is imported: its e-mail patterns cost ~70 ms of each cold start.
import_deferring_regexes("marshmallow.validate")

from marshmallow import (  # noqa: E402  (after the line above, on purpose)
    EXCLUDE,
    Schema,
    ValidationError,
    fields,
    post_load,
    validate,
    validates_schema,
)

MONTH_PATTERN = r"^[0-9]{4}-(0[1-9]|1[0-2])(-(0[1-9]|[12][0-9]|3[01]))?$"
_INTEGER = re.compile(r"[+-]?[0-9]+")
_NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")


class FullMatch(validate.Regexp):
    """``Regexp`` that must match the whole value (``$`` alone lets a final newline in)."""

    def __call__(self, value: Any) -> Any:
        if not isinstance(value, str) or re.fullmatch(str(self.regex.pattern), value) is None:
            raise ValidationError(self._format_error(value))
        return value


class ProductPrefix(validate.Validator):
    """1-64 letters (of any script, with their combining marks), decimal digits, spaces and
    hyphens: a product name's start, matched literally (no LIKE wildcard, quote or control
    character can get in). Not a regular expression, so the OpenAPI document states the
    rule in words: JSON Schema patterns have no portable way to say "a letter"."""

    error = "Use 1-64 letters, digits, spaces or hyphens."

    def __call__(self, value: Any) -> Any:
        if not isinstance(value, str) or not 1 <= len(value) <= MAX_PREFIX_CHARS:
            raise ValidationError(self.error)
        if not all(map(is_prefix_char, value)):
            raise ValidationError(self.error)
        return value


class QueryInteger(fields.Integer):
    """A plain ASCII integer (no ``1e3``, ``1_000`` or non-ASCII digits); huge ones are capped."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        text = value.strip() if isinstance(value, str) else value
        if not isinstance(text, str) or not _INTEGER.fullmatch(text):
            raise self.make_error("invalid")
        digits = text.lstrip("+-").lstrip("0") or "0"  # 31 digits of 0002 are 2, not huge
        number = int(digits) if len(digits) <= 30 else 10**30
        return -number if text.startswith("-") else number


_EXPONENT_LIMIT = MAX_EMAX - 1000


class QueryNumber(fields.Decimal):
    """A finite ASCII decimal number, parsed exactly."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Decimal:
        text = value.strip() if isinstance(value, str) else value
        if not isinstance(text, str) or not _NUMBER.fullmatch(text):
            raise self.make_error("invalid")
        try:
            return Decimal(text)
        except InvalidOperation:
            # An exponent beyond what Decimal holds (over 18 digits) is brought just
            # inside it: every mart value compares the same with the number, and two
            # such numbers still compare by their digits (min <= max is still checked).
            mantissa, _, exponent = text.lower().partition("e")
            limit = _EXPONENT_LIMIT if not exponent.startswith("-") else -_EXPONENT_LIMIT
            return Decimal(f"{mantissa}e{limit}")


class Month(fields.String):
    """``YYYY-MM`` or ``YYYY-MM-DD``; loads as the first day of that month."""

    default_error_messages = {"invalid_month": "Not a valid month: use YYYY-MM or YYYY-MM-DD."}  # noqa: RUF012

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> date:  # type: ignore[override]
        text = super()._deserialize(value, attr, data, **kwargs)
        if not re.fullmatch(MONTH_PATTERN, text):
            raise self.make_error("invalid_month")
        parts = [int(part) for part in text.split("-")]  # the pattern left real dates only
        try:
            date(parts[0], parts[1], parts[2] if len(parts) == 3 else 1)
            return date(parts[0], parts[1], 1)
        except ValueError:
            raise self.make_error("invalid_month") from None


_NON_NEGATIVE = validate.Range(min=0)


class TrendParamsSchema(Schema):
    """Query parameters of ``GET /sales/trends``, ``/sales/pg-trends`` and the dashboard."""

    product_prefix = fields.String(
        load_default=DEFAULT_PRODUCT_PREFIX,
        validate=ProductPrefix(),
        metadata={
            "description": "Literal prefix of the product name (case-sensitive): 1-64 letters"
            " (any script), digits, spaces or hyphens.",
            "minLength": 1,
            "maxLength": MAX_PREFIX_CHARS,
            "example": DEFAULT_PRODUCT_PREFIX,
        },
    )
    sale_month = Month(
        metadata={
            "description": "Only this month: YYYY-MM, or YYYY-MM-DD for that date's month.",
            "pattern": MONTH_PATTERN,
            "example": "2023-10",
        },
    )
    min_amount = QueryNumber(
        load_default=Decimal(0),
        validate=_NON_NEGATIVE,
        metadata={
            "description": "Keep rows with total_amount >= this (as shown, rounded to cents).",
            "default": 0,
        },
    )
    max_quantity = QueryInteger(
        validate=_NON_NEGATIVE,
        metadata={"description": "Keep rows with total_quantity <= this."},
    )
    min_avg_price = QueryNumber(
        validate=_NON_NEGATIVE,
        metadata={"description": "Keep rows with avg_price >= this (as shown, rounded to cents)."},
    )
    max_avg_price = QueryNumber(
        validate=_NON_NEGATIVE,
        metadata={
            "description": (
                "Keep rows with avg_price <= this (as shown, rounded to cents; >= min_avg_price)."
            )
        },
    )
    limit = QueryInteger(
        load_default=DEFAULT_LIMIT,
        validate=validate.Range(min=1, max=MAX_LIMIT),
        metadata={"description": "Rows per page."},
    )
    offset = QueryInteger(
        load_default=0, validate=_NON_NEGATIVE, metadata={"description": "Rows to skip."}
    )

    # Run beside field errors too, so one answer lists every broken rule; a bound that
    # failed its own rule is absent from ``data`` and not compared.
    @validates_schema(skip_on_field_errors=False)
    def _min_not_above_max(self, data: dict[str, Any], **kwargs: Any) -> None:
        errors = {}
        for low_name, high_name in RANGE_PAIRS:
            low, high = data.get(low_name), data.get(high_name)
            if low is not None and high is not None and low > high:
                errors[low_name] = [f"Must not be greater than {high_name}."]
        if errors:
            raise ValidationError(errors)

    @post_load
    def _filters(self, data: dict[str, Any], **kwargs: Any) -> TrendFilters:
        return TrendFilters(**data)  # the fields are PARAMETERS (a test holds them alike)


# 1-256 characters, no control characters (PostgreSQL text cannot even hold NUL).
_USERNAME = FullMatch(
    r"^[^\u0000-\u001f\u007f-\u009f]{1,256}$", error="1-256 characters, no control characters."
)


class TokenFormSchema(Schema):
    """``POST /token``: the OAuth2 password grant, as a form."""

    class Meta:
        unknown = EXCLUDE  # OAuth2 clients may add scope, client_id, ...

    username = fields.String(required=True, validate=_USERNAME)
    password = fields.String(
        required=True, validate=validate.Length(min=1, max=1024), metadata={"format": "password"}
    )
    grant_type = fields.String(
        validate=validate.OneOf(["password", ""], error="Must be password, or absent."),
        metadata={"description": "Absent, empty (the same, RFC 6749 3.1) or password."},
    )


class LoginFormSchema(Schema):
    """``POST /login`` of the dashboard."""

    class Meta:
        # A name the client made up is not named back: a password holding a raw `&` makes
        # one from its tail ("Unknown field: 2S3cr3t").
        unknown = EXCLUDE

    username = fields.String(required=True, validate=_USERNAME)
    password = fields.String(
        required=True, validate=validate.Length(min=1, max=1024), metadata={"format": "password"}
    )
    csrf_token = fields.String(required=True, validate=validate.Length(min=1, max=512))
    # Any length (the form's size is bounded): one the page cannot return to means "/".
    next = fields.String(
        metadata={"description": "The dashboard URL to return to (this site's `/?...` only)."},
    )


_TREND_SCHEMA = TrendParamsSchema()
TOKEN_FORM = TokenFormSchema()
LOGIN_FORM = LoginFormSchema()


def _single_values(
    args: MultiDict[str, str], *, drop_empty: Collection[str] = (), only: set[str] | None = None
) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """The parameters given once, and the messages for those given more than once.

    An empty value of a name in ``drop_empty`` counts as absent (an untouched form field);
    one of spaces is a value, judged by the same rules as the APIs judge it.
    """
    values: dict[str, Any] = {}
    repeated: dict[str, list[str]] = {}
    for key in args:
        if only is not None and key not in only:
            continue
        given = args.getlist(key)
        if len(given) > 1:
            repeated[key] = ["Given more than once."]
        elif not (key in drop_empty and given[0] == ""):
            values[key] = given[0]
    return values, repeated


def parse_trend_params(args: MultiDict[str, str], *, drop_empty: bool = False) -> TrendFilters:
    """Validated filters, or ``ValidationFailed`` (422) with messages per field.

    ``drop_empty`` treats ``name=`` as absent for the filters (an HTML form's untouched
    fields); an unknown parameter is refused even when blank.
    """
    items = tuple(args.items(multi=True))
    if sum(len(key) + len(value) for key, value in items) > MAX_CACHED_QUERY_CHARS:
        return _parsed.__wrapped__(items, drop_empty)  # valid, but no query a client repeats
    return _parsed(items, drop_empty)


# Clients repeat the same few queries (dashboards, polling apps): the schema runs once per
# distinct query string (~50-80 us saved per request). Filters are immutable; failures
# (422) are not cached; the bound keeps a client rotating query strings from growing it, and
# only short queries are kept (thirty valid 2 MB ones, 0.000...01, held 190 MB).
MAX_CACHED_QUERY_CHARS = 1024


@functools.lru_cache(maxsize=256)
def _parsed(items: tuple[tuple[str, str], ...], drop_empty: bool) -> TrendFilters:
    values, repeated = _single_values(MultiDict(items), drop_empty=PARAMETERS if drop_empty else ())
    for name in [name for name in repeated if name not in PARAMETERS]:
        del repeated[name]  # unknown is what to say of it, however often it is given
        values[name] = ""
    try:
        filters: TrendFilters = _TREND_SCHEMA.load(values)
    except ValidationError as exc:  # every broken rule at once, repeated parameters too
        raise ValidationFailed({**_details(exc.messages), **repeated}) from None
    if repeated:
        raise ValidationFailed(repeated)
    return filters


def load_form(schema: Schema, form: MultiDict[str, str]) -> dict[str, Any]:
    """A form's single values validated by ``schema``; ``ValidationError`` if broken."""
    ignored = schema.unknown == EXCLUDE  # fields it ignores may come in any number
    values, repeated = _single_values(form, only=set(schema.fields) if ignored else None)
    try:
        data: dict[str, Any] = schema.load(values)
    except ValidationError as exc:  # every broken field at once, repeated ones too
        raise ValidationError({**_details(exc.messages), **repeated}) from None
    if repeated:
        raise ValidationError(repeated)
    return data


def _details(messages: Any) -> dict[str, list[str]]:
    if isinstance(messages, Mapping):
        return {
            str(key): [str(m) for m in value] if isinstance(value, list) else [str(value)]
            for key, value in messages.items()
        }
    return {"_schema": [str(m) for m in messages]}
