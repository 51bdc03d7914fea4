"""trends_pg called directly with a Flask request (no server), against dbt-built marts."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import warnings
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any

import jwt
import pytest

from common.config import Settings
from common.db import PgPool
from common.trends import BOUND_CAP, TrendFilters, mart_bound
from common.trends_pg import PgTrends, like_prefix
from tests.conftest import TEST_ENV
from tests.functions.conftest import Caller, analyst_token, caller, load_function
from tests.functions.conftest import bearer as auth

SECRET = TEST_ENV["SALESMART_JWT_SECRET"]
PATH = "/sales/pg-trends"


@pytest.fixture(scope="module")
def module(marts_dsn: str) -> Iterator[ModuleType]:
    with pytest.MonkeyPatch.context() as patch:
        yield load_function("trends_pg", patch, SALESMART_DATABASE_URL=marts_dsn)


@pytest.fixture
def call(module: ModuleType, flask_app: Any) -> Caller:
    return caller(flask_app, module.trends_pg)


@pytest.fixture
def token(fn_settings: Settings) -> str:
    return analyst_token(fn_settings)


def get(call: Caller, token: str, **params: str) -> Any:
    response = call(PATH, headers=auth(token), query_string=params)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {
        "sub": "alice",
        "role": "analyst",
        "iat": now,
        "exp": now + 600,
        "iss": "salesmart",
        "aud": "salesmart-api",
    }
    base.update(overrides)
    return {key: value for key, value in base.items() if value is not None}


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


# -- the answer ---------------------------------------------------------------------------------
def test_sample_month_matches_the_contract(call: Caller, token: str) -> None:
    rows = get(call, token, sale_month="2023-10", product_prefix="Halal ")
    top = {row["product"]: row for row in rows[:3]}
    assert top["Halal Laptop"] == {
        "product": "Halal Laptop",
        "sale_month": "2023-10-01",
        "total_amount": 1999.98,
        "total_quantity": 2,
        "avg_price": 999.99,
        "transaction_count": 1,
    }
    assert top["Halal Keyboard"]["total_amount"] == 249.95
    assert top["Halal Mouse"]["total_amount"] == 249.9
    assert [r["product"] for r in rows[:3]] == ["Halal Laptop", "Halal Keyboard", "Halal Mouse"]


def test_order_is_total_desc_then_product(call: Caller, token: str) -> None:
    rows = get(call, token)
    keys = [(-Decimal(str(r["total_amount"])), r["product"]) for r in rows]
    assert keys == sorted(keys)
    ties = [r["product"] for r in rows if r["total_amount"] == 100.0]
    assert ties == ["Halal Aaa", "Halal Bbb"]


def test_money_rounds_half_away_from_zero(call: Caller, token: str) -> None:
    # Halal Honey: prices 10.02 and 10.03 -> avg 10.025 -> 10.03 (half-even would say 10.02).
    (honey,) = get(call, token, product_prefix="Halal Honey")
    assert honey["avg_price"] == 10.03
    assert honey["total_amount"] == 20.05
    assert honey["transaction_count"] == 2


def test_json_numbers_not_strings(call: Caller, token: str) -> None:
    response = call(PATH, headers=auth(token), query_string={"limit": "1"})
    text = response.get_data(as_text=True)
    assert '"total_amount":1999.98' in text
    assert '"avg_price":999.99' in text


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"sale_month": "2023-11"}, {"Halal Dates", "Halal Honey"}),
        ({"sale_month": "2023-11-30"}, {"Halal Dates", "Halal Honey"}),
        ({"sale_month": "2022-01"}, set()),
        ({"min_amount": "249.95"}, {"Halal Laptop", "Halal Keyboard"}),
        ({"max_quantity": "1"}, {"Halal%Special", "Halal Dates"}),
        (
            {"min_avg_price": "49.99", "max_avg_price": "999.99"},
            {"Halal Laptop", "Halal Keyboard", "Halal Aaa"},
        ),
        # Halal Honey's avg_price is 10.025, shown 10.03: filters compare what is shown.
        ({"max_avg_price": "10.03"}, {"Halal Honey"}),
        ({"min_avg_price": "10.03", "max_avg_price": "10.03"}, {"Halal Honey"}),
        ({"max_avg_price": "10.025"}, set()),
        (
            {"min_avg_price": "10.0251", "max_avg_price": "11"},
            {"Halal Honey", "Halal_Tea", "HalalXTea"},
        ),
        ({"min_avg_price": "10.031", "max_avg_price": "11"}, {"Halal_Tea", "HalalXTea"}),
        ({"product_prefix": "Halal D"}, {"Halal Dates"}),
        ({"product_prefix": "halal"}, set()),
    ],
)
def test_filters(call: Caller, token: str, params: dict[str, str], expected: set[str]) -> None:
    assert {row["product"] for row in get(call, token, **params)} == expected


def test_paging(call: Caller, token: str) -> None:
    everything = get(call, token)
    assert len(everything) == 12
    assert get(call, token, limit="5") == everything[:5]
    assert get(call, token, limit="5", offset="5") == everything[5:10]
    assert get(call, token, offset="12") == []
    assert get(call, token, offset="9" * 30) == []


def test_bounds_on_the_shown_value_fit_numeric() -> None:
    # shown >= 10.03 (or 10.0201) exactly when the exact value >= 10.025 ...
    assert mart_bound(Decimal("10.03"), lower=True) == Decimal("10.025")
    assert mart_bound(Decimal("10.0201"), lower=True) == Decimal("10.025")
    # ... and shown <= 10.03 (or 10.0399) when it is below 10.035, at most 9 decimals.
    assert mart_bound(Decimal("10.03"), lower=False) == Decimal("10.034999999")
    assert mart_bound(Decimal("10.0399"), lower=False) == Decimal("10.034999999")
    assert mart_bound(Decimal("0"), lower=True) == Decimal("-0.005")
    assert mart_bound(Decimal("0"), lower=False) == Decimal("0.004999999")
    assert mart_bound(Decimal("1e999999"), lower=True) == BOUND_CAP  # above any mart value
    assert mart_bound(Decimal("1e-999999"), lower=True) == Decimal("0.005")


@pytest.mark.parametrize(
    "params",
    [
        # Bounds with no 9-decimal value between them (found by schemathesis: once a 500).
        {"min_avg_price": "5e-324", "max_avg_price": "2.2939414389682573e-32"},
        {"min_amount": "2.348848682100165e+283", "max_quantity": "191921824579567"},
        {"min_amount": "1e999999"},
        {"max_avg_price": "1e999999", "min_avg_price": "1e-999999", "offset": "9" * 40},
        {"max_quantity": "9" * 40},
        # Exponents beyond what Decimal holds (once a 500, found by a review).
        {"min_amount": "1e-99999999999999999999"},
        {"min_amount": "0e-99999999999999999999", "max_avg_price": "1e99999999999999999999"},
        {"min_avg_price": "1e-99999999999999999999", "min_amount": "1e99999999999999999999"},
    ],
)
def test_extreme_numbers_are_answered(call: Caller, token: str, params: dict[str, str]) -> None:
    response = call(PATH, headers=auth(token), query_string=params)
    assert response.status_code == 200


def test_like_wildcards_never_act_as_wildcards(fn_settings: Settings) -> None:
    """Below the HTTP layer (which refuses % and _ already): the query escapes them."""
    assert like_prefix("a%b_c!") == "a!%b!_c!!%"
    pool = PgPool(fn_settings.database_url, max_size=1)
    trends = PgTrends(pool, fn_settings.mart_schema)
    try:

        def products(prefix: str) -> list[str]:
            page, _, _ = trends.page_and_monthly_totals(TrendFilters(product_prefix=prefix))
            return [r["product"] for r in page]

        assert products("Halal_") == ["Halal_Tea"]  # not HalalXTea
        assert products("Halal%") == ["Halal%Special"]  # not every Halal product
        assert products("%") == []
        assert products("_") == []
        assert products("Halal!") == []
        assert products("x' OR '1'='1") == []
        assert products("Halal'; DELETE FROM public.summary_sales; --") == []
        assert len(products("Halal")) == 12  # nothing was deleted
    finally:
        pool.close()


@pytest.mark.parametrize(
    "params",
    [
        {"product_prefix": "Halal%"},
        {"product_prefix": "Halal_"},
        {"product_prefix": "%"},
        {"product_prefix": "Halal' OR '1'='1"},
        {"product_prefix": "Halal'; DROP TABLE auth.users; --"},
        {"sale_month": "2023-10' OR '1'='1"},
        {"min_amount": "0; DELETE FROM summary_sales"},
        {"limit": "1; SELECT pg_sleep(10)"},
    ],
)
def test_wildcards_and_injection_are_422(call: Caller, token: str, params: dict[str, str]) -> None:
    response = call(PATH, headers=auth(token), query_string=params)
    assert response.status_code == 422
    body = response.get_json()
    assert body["error"] == "validation_error"
    assert set(body["details"]) == set(params)
    assert len(get(call, token)) == 12  # the mart is intact


# -- 422 per rule ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"product_prefix": ""}, "product_prefix"),
        ({"product_prefix": "x" * 65}, "product_prefix"),
        ({"sale_month": "2023-13"}, "sale_month"),
        ({"sale_month": "2023-02-30"}, "sale_month"),
        ({"min_amount": "-1"}, "min_amount"),
        ({"min_amount": "lots"}, "min_amount"),
        ({"max_quantity": "-1"}, "max_quantity"),
        ({"max_quantity": "2.5"}, "max_quantity"),
        ({"min_avg_price": "-0.5"}, "min_avg_price"),
        ({"max_avg_price": "NaN"}, "max_avg_price"),
        ({"min_avg_price": "9", "max_avg_price": "8"}, "min_avg_price"),
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"offset": "-1"}, "offset"),
        ({"colour": "green"}, "colour"),
    ],
)
def test_422_per_rule(call: Caller, token: str, params: dict[str, str], field: str) -> None:
    response = call(PATH, headers=auth(token), query_string=params)
    assert response.status_code == 422
    body = response.get_json()
    assert set(body) == {"error", "message", "request_id", "details"}
    assert list(body["details"]) == [field]
    assert body["request_id"] == response.headers["X-Request-ID"]


# -- auth -----------------------------------------------------------------------------------------
def _assert_401(response: Any) -> None:
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    body = response.get_json()
    assert set(body) == {"error", "message", "request_id"}


def test_401_without_token(call: Caller) -> None:
    _assert_401(call(PATH))
    _assert_401(call(PATH, headers={"Authorization": "Basic YWxpY2U6cHc="}))
    _assert_401(call(PATH, headers={"Authorization": "Bearer"}))
    _assert_401(call(PATH, headers={"Authorization": "Bearer a b"}))


def test_401_is_checked_before_parameters(call: Caller) -> None:
    _assert_401(call(PATH, query_string={"limit": "0"}))


@pytest.mark.parametrize(
    "forge",
    [
        "alg_none",
        "alg_none_upper",
        "wrong_key",
        "expired",
        "wrong_audience",
        "wrong_issuer",
        "tampered_role",
        "tampered_subject",
        "missing_exp",
        "missing_role",
        "missing_aud",
        "hs512",
        "future_iat",
        "garbage",
        "crit_header",
        "jwe_typ",
        "padded_signature",
        "four_segments",
        "string_exp",
        "audience_list",
        "infinite_exp",
        "boolean_iat",
        "es256_header",
        "two_day_lifetime",
        "non_canonical_signature",
    ],
)
def test_forged_tokens_are_401(call: Caller, token: str, forge: str) -> None:
    header, payload, signature = token.split(".")
    if forge == "alg_none":
        forged = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims())}."
    elif forge == "alg_none_upper":
        forged = f"{b64({'alg': 'None', 'typ': 'JWT'})}.{b64(claims(role='admin'))}.{signature}"
    elif forge == "wrong_key":
        forged = jwt.encode(claims(), "another-secret-of-enough-length-xxxxxxxx", "HS256")
    elif forge == "expired":
        forged = jwt.encode(
            claims(iat=int(time.time()) - 4000, exp=int(time.time()) - 60), SECRET, "HS256"
        )
    elif forge == "wrong_audience":
        forged = jwt.encode(claims(aud="someone-else"), SECRET, "HS256")
    elif forge == "wrong_issuer":
        forged = jwt.encode(claims(iss="evil"), SECRET, "HS256")
    elif forge == "tampered_role":
        forged = f"{header}.{b64(claims(role='admin'))}.{signature}"
    elif forge == "tampered_subject":
        forged = f"{header}.{b64(claims(sub='admin'))}.{signature}"
    elif forge == "missing_exp":
        forged = jwt.encode(claims(exp=None), SECRET, "HS256")
    elif forge == "missing_role":
        forged = jwt.encode(claims(role=None), SECRET, "HS256")
    elif forge == "missing_aud":
        forged = jwt.encode(claims(aud=None), SECRET, "HS256")
    elif forge == "hs512":
        with warnings.catch_warnings():  # the right key, a short one for HS512
            warnings.simplefilter("ignore")
            forged = jwt.encode(claims(), SECRET, "HS512")
    elif forge == "future_iat":
        forged = jwt.encode(claims(iat=int(time.time()) + 3600), SECRET, "HS256")
    elif forge == "crit_header":
        forged = jwt.encode(claims(), SECRET, "HS256", headers={"crit": ["exp"], "exp": 1})
    elif forge == "jwe_typ":
        forged = jwt.encode(claims(), SECRET, "HS256", headers={"typ": "JWE"})
    elif forge == "padded_signature":
        forged = f"{token}=="
    elif forge == "four_segments":
        forged = f"{token}.{signature}"
    elif forge == "string_exp":
        forged = jwt.encode(claims(exp=str(int(time.time()) + 600)), SECRET, "HS256")
    elif forge == "audience_list":
        forged = jwt.encode(claims(aud=["salesmart-api", "other"]), SECRET, "HS256")
    elif forge == "infinite_exp":
        body = json.dumps(claims(exp=float("inf")))  # "Infinity": not JSON
        signing_input = f"{header}.{base64.urlsafe_b64encode(body.encode()).rstrip(b'=').decode()}"
        mac = hmac.new(SECRET.encode(), signing_input.encode(), hashlib.sha256).digest()
        forged = f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
    elif forge == "boolean_iat":
        forged = jwt.encode(claims(iat=True), SECRET, "HS256")
    elif forge == "es256_header":
        forged = f"{b64({'alg': 'ES256', 'typ': 'JWT'})}.{payload}.{signature}"
    elif forge == "two_day_lifetime":  # signed with the key, but past the contract's one day
        now = int(time.time())
        forged = jwt.encode(claims(iat=now, exp=now + 2 * 86400), SECRET, "HS256")
    elif forge == "non_canonical_signature":
        # 32 bytes are 43 base64url characters, the last holding 4 bits and 2 unused ones:
        # another last character with the same 4 bits decodes to the same signature. One
        # signed token has one spelling.
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        last = alphabet.index(signature[-1])
        forged = f"{header}.{payload}.{signature[:-1]}{alphabet[last ^ 1]}"
    else:
        forged = "not.a.jwt"
    response = call(PATH, headers=auth(forged))
    _assert_401(response)
    assert response.get_json()["error"] == "invalid_token"


@pytest.mark.parametrize("typ", ["jwt", "application/jwt", "Application/JWT"])
def test_the_jwt_type_header_is_read_as_a_media_type(call: Caller, typ: str) -> None:
    """RFC 7515 4.1.9: ``typ`` is compared case-insensitively, "application/" optional."""
    token = jwt.encode(claims(), SECRET, "HS256", headers={"typ": typ})
    assert call(PATH, headers=auth(token)).status_code == 200


def test_valid_token_with_foreign_role_is_403(call: Caller) -> None:
    forged = jwt.encode(claims(role="guest"), SECRET, "HS256")
    response = call(PATH, headers=auth(forged))
    assert response.status_code == 403
    assert response.get_json()["error"] == "forbidden"
    # RFC 6750 3.1: a valid token whose rights are not enough.
    assert response.headers["WWW-Authenticate"] == (
        'Bearer realm="salesmart", error="insufficient_scope"'
    )


# -- caching, methods, paths, ids -----------------------------------------------------------------
LIMIT_3 = {"limit": "3"}


def test_etag_and_304(call: Caller, token: str) -> None:
    first = call(PATH, headers=auth(token), query_string={"limit": "3"})
    etag = first.headers["ETag"]
    assert first.status_code == 200
    assert first.headers["Cache-Control"] == "private"  # the contract's, exactly
    again = call(PATH, headers={**auth(token), "If-None-Match": etag}, query_string={"limit": "3"})
    assert again.status_code == 304
    assert again.get_data() == b""
    assert again.headers["ETag"] == etag
    assert again.headers["X-Request-ID"]
    listed = call(
        PATH,
        headers={**auth(token), "If-None-Match": f'"nope", W/{etag}'},
        query_string={"limit": "3"},
    )
    assert listed.status_code == 304
    other = call(PATH, headers={**auth(token), "If-None-Match": etag}, query_string={"limit": "4"})
    assert other.status_code == 200
    assert other.headers["ETag"] != etag
    # RFC 9110 13.2.2: If-Match is checked first; a tag that is not the answer's is a 412.
    stale = call(
        PATH,
        headers={**auth(token), "If-Match": '"nope"', "If-None-Match": etag},
        query_string={"limit": "3"},
    )
    assert stale.status_code == 412
    assert stale.get_json()["error"] == "precondition_failed"
    for matching in (etag, "*"):
        held = call(
            PATH, headers={**auth(token), "If-Match": matching}, query_string={"limit": "3"}
        )
        assert held.status_code == 200 and held.headers["ETag"] == etag
    # Not for an answer that would not be a 2xx: no token is still a 401.
    assert call(PATH, headers={"If-Match": '"nope"'}).status_code == 401


def test_405_with_allow(call: Caller, token: str) -> None:
    for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
        response = call(PATH, method=method, headers=auth(token))
        assert response.status_code == 405
        assert response.get_json()["error"] == "method_not_allowed"
        assert set(response.headers["Allow"].split(", ")) == {"GET", "HEAD"}
    assert call(PATH, method="HEAD", headers=auth(token)).status_code == 200


def test_404_envelope(call: Caller, token: str) -> None:
    for path in ("/index.html", "/sales/trends", "/sales/pg-trends/x", "/../etc/passwd"):
        response = call(path, headers=auth(token))
        assert response.status_code == 404
        assert response.get_json()["error"] == "not_found"


def test_root_is_the_same_resource(call: Caller, token: str) -> None:
    documented = call("/sales/pg-trends?sale_month=2023-10", headers=auth(token))
    root = call("/?sale_month=2023-10", headers=auth(token))
    assert root.status_code == documented.status_code == 200
    assert root.get_json() == documented.get_json()


def test_request_id_echoed_or_made(call: Caller) -> None:
    echoed = call("/healthz", headers={"X-Request-ID": "trace-abc.123"})
    assert echoed.headers["X-Request-ID"] == "trace-abc.123"
    for hostile in ("a" * 300, "<script>", "x y", "\u00e9t\u00e9"):
        made = call("/healthz", headers={"X-Request-ID": hostile})
        assert made.headers["X-Request-ID"] != hostile
        assert len(made.headers["X-Request-ID"]) == 32


def test_security_headers(call: Caller, token: str) -> None:
    response = call(PATH, headers=auth(token))
    csp = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp
    assert "http" not in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"


def test_healthz_needs_no_auth(call: Caller) -> None:
    response = call("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "function": "trends_pg"}


def test_openapi_document(call: Caller) -> None:
    document = call("/openapi.json").get_json()
    assert document["openapi"].startswith("3.")
    operation = document["paths"]["/sales/pg-trends"]["get"]
    names = {p["name"] for p in operation["parameters"]}
    assert names == {
        "product_prefix",
        "sale_month",
        "min_amount",
        "max_quantity",
        "min_avg_price",
        "max_avg_price",
        "limit",
        "offset",
    }
    assert {"200", "304", "401", "422", "503"} <= set(operation["responses"])


def _refused(capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, **env: str) -> str:
    """The reason trends_pg gives for refusing to start under ``env``: exit 78 and one
    JSON line (as under salesmart-serve and a bare functions-framework)."""
    capfd.readouterr()
    with pytest.raises(SystemExit) as exited:
        load_function("trends_pg", monkeypatch, **env)
    assert exited.value.code == 78
    entry = json.loads(capfd.readouterr().out.strip().splitlines()[-1])
    assert entry["message"] == "refused to start" and entry["severity"] == "ERROR"
    return str(entry["reason"])


def test_refuses_to_start_with_short_secrets(
    marts_dsn: str, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    reason = _refused(
        capfd, monkeypatch, SALESMART_DATABASE_URL=marts_dsn, SALESMART_JWT_SECRET="short"
    )
    assert reason.startswith("SALESMART_JWT_SECRET is only 5 bytes")
    reason = _refused(capfd, monkeypatch, SALESMART_DATABASE_URL=marts_dsn, SALESMART_PII_KEY="")
    assert reason.startswith("SALESMART_PII_KEY is missing")
    # Local development (SALESMART_ENV=dev) accepts short secrets.
    load_function(
        "trends_pg",
        monkeypatch,
        SALESMART_DATABASE_URL=marts_dsn,
        SALESMART_JWT_SECRET="short",
        SALESMART_ENV="dev",
    )
    load_function("trends_pg", monkeypatch, SALESMART_DATABASE_URL=marts_dsn)  # as before
    # Only exactly "dev" is the local run: anything else is production, secrets checked.
    for almost in ("Dev", "DEV", " dev", "development"):
        reason = _refused(
            capfd,
            monkeypatch,
            SALESMART_DATABASE_URL=marts_dsn,
            SALESMART_JWT_SECRET="short",
            SALESMART_ENV=almost,
        )
        assert reason.startswith("SALESMART_JWT_SECRET")


def test_the_database_password_is_a_secret_held_to_the_same_length(
    marts_dsn: str,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    """The contract names the database password among the secrets a function outside dev
    refuses to start without, or with under 32 bytes (it started with either before)."""
    short = "postgresql://salesmart:short@127.0.0.1:5432/salesmart"
    reason = _refused(capfd, monkeypatch, SALESMART_DATABASE_URL=short)
    assert reason.startswith("SALESMART_DATABASE_URL has a password of only 5 bytes")
    assert "short@" not in reason  # named, never echoed
    none = "postgresql://salesmart@127.0.0.1:5432/salesmart"
    assert _refused(capfd, monkeypatch, SALESMART_DATABASE_URL=none).startswith(
        "SALESMART_DATABASE_URL has no password"
    )
    # libpq's own variable counts as the URL's password; a client certificate needs none.
    monkeypatch.setenv("PGPASSWORD", "p" * 32)
    load_function("trends_pg", monkeypatch, SALESMART_DATABASE_URL=none)
    monkeypatch.delenv("PGPASSWORD")
    certificate = tmp_path / "client.pem"
    certificate.write_text("-----BEGIN CERTIFICATE-----\n")
    load_function("trends_pg", monkeypatch, SALESMART_DATABASE_URL=f"{none}?sslcert={certificate}")
    load_function("trends_pg", monkeypatch, SALESMART_DATABASE_URL=short, SALESMART_ENV="dev")
    # The module is reloaded in place: leave it serving the marts for the tests after this.
    load_function("trends_pg", monkeypatch, SALESMART_DATABASE_URL=marts_dsn)


def test_a_tls_file_the_database_url_names_must_be_there(
    marts_dsn: str,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    """A function whose root certificate was not mounted started, passed its health check
    and answered 503 to every request (found by an operator audit): it stops at start."""
    missing = tmp_path / "ca.pem"
    url = f"{marts_dsn}?sslmode=verify-ca&sslrootcert={missing}"
    assert _refused(capfd, monkeypatch, SALESMART_DATABASE_URL=url) == (
        f"SALESMART_DATABASE_URL names sslrootcert={missing}, which does not exist"
    )
    url = f"{marts_dsn}?sslmode=verify-full&sslcert={tmp_path}"
    assert _refused(capfd, monkeypatch, SALESMART_DATABASE_URL=url) == (
        f"SALESMART_DATABASE_URL names sslcert={tmp_path}, which is not a file"
    )
    # The system's CA store is no file; a present one is taken (connections open on use).
    load_function(
        "trends_pg",
        monkeypatch,
        SALESMART_DATABASE_URL=f"{marts_dsn}?sslmode=verify-full&sslrootcert=system",
    )
    missing.write_text("-----BEGIN CERTIFICATE-----\n")
    load_function(
        "trends_pg",
        monkeypatch,
        SALESMART_DATABASE_URL=f"{marts_dsn}?sslmode=verify-ca&sslrootcert={missing}",
    )
    load_function("trends_pg", monkeypatch, SALESMART_DATABASE_URL=marts_dsn)


def test_a_named_config_file_that_is_missing_stops_the_start(
    marts_dsn: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    absent = tmp_path / "typo.yaml"
    reason = _refused(
        capfd, monkeypatch, SALESMART_DATABASE_URL=marts_dsn, SALESMART_CONFIG=str(absent)
    )
    assert reason == f"SALESMART_CONFIG={absent}: no such file"


def test_remembered_tokens_still_expire(
    call: Caller, fn_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    import common.auth

    monkeypatch.setattr(common.auth, "CLOCK_SKEW_SECONDS", 0)
    expires = int(time.time()) + 3
    short = jwt.encode(claims(exp=expires), SECRET, "HS256")
    assert call(PATH, headers=auth(short), query_string={"limit": "1"}).status_code == 200
    assert call(PATH, headers=auth(short), query_string={"limit": "1"}).status_code == 200
    time.sleep(max(0.0, expires + 1.1 - time.time()))  # past the expiry however long the calls took
    _assert_401(call(PATH, headers=auth(short), query_string={"limit": "1"}))


def test_postgres_built_body_is_byte_for_byte_the_python_one(fn_settings: Settings) -> None:
    """trends_pg's body is built by PostgreSQL (``summary_json``), trends_bq's by
    ``common.api.summary_body`` from rows: the same bytes for awkward text and numbers,
    compared on a mart of this test's own (a schema with its own ``summary_sales``)."""
    from common.api import summary_body
    from common.pg import connect

    products = [
        'Halal "quoted" \\ back/slash',
        "Halal\ttab\nnew\rline\x01\x1f\x7f",
        "Halal ünïcode 中文 \u2028 \U0001f600",
        "Halal </script><b>",
        "Halal",
    ]
    amounts = ["0", "0.005", "5", "1999.985", "12345678901234567.895", "0.004999999"]
    conn = connect(fn_settings.database_url)
    pool = PgPool(fn_settings.database_url, max_size=1)
    try:
        conn.run("DROP SCHEMA IF EXISTS body_check CASCADE")
        conn.run("CREATE SCHEMA body_check")
        conn.run("CREATE TABLE body_check.summary_sales (LIKE public.summary_sales)")
        for i, product in enumerate(products):
            for j, amount in enumerate(amounts):
                conn.run(
                    "INSERT INTO body_check.summary_sales (product, sale_month, total_amount,"
                    " total_quantity, avg_price, transaction_count) VALUES (:p, :m, :a, :q,"
                    " :avg, :n)",
                    p=product,
                    m=f"2023-{j + 1:02d}-01",
                    a=Decimal(amount),
                    q=i + j + 1,
                    avg=Decimal(amount) / 3,
                    n=j + 1,
                )
        trends = PgTrends(pool, "body_check")
        for filters in (
            TrendFilters(),
            TrendFilters(limit=7, offset=3),
            TrendFilters(product_prefix="Halal </", min_amount=Decimal("0.01")),
            TrendFilters(product_prefix="nothing"),
        ):
            rows, _, _ = trends.page_and_monthly_totals(filters)
            count, body = trends.summary_json(filters)
            assert count == len(rows)
            assert body == summary_body(rows), filters
            assert json.loads(body) == json.loads(summary_body(rows))
        everything = json.loads(trends.summary_json(TrendFilters(limit=1000))[1])
        assert len(everything) == len(products) * len(amounts)
        assert {row["product"] for row in everything} == set(products)
        assert "5.00" in trends.summary_json(TrendFilters(limit=1000))[1].decode()
    finally:
        pool.close()
        conn.run("DROP SCHEMA IF EXISTS body_check CASCADE")
        conn.close()
