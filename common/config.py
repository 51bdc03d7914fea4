"""One typed settings object, built once per process.

Precedence (written down once, here): environment variables first, then
``data/pipeline_config.yaml`` (or the file named by ``SALESMART_CONFIG``), then defaults.
Secrets (JWT key, PII key, database password, BigQuery credentials) come only from the
environment or from mounted files (``<NAME>_FILE``), never from the YAML file.
Outside ``SALESMART_ENV=dev`` a missing or short secret is refused at start.
"""

from __future__ import annotations

import difflib
import functools
import json
import os
import re
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml

from common.trends import SUMMARY_COLUMNS, is_prefix_char
from common.wording import not_utf8_at

MIN_SECRET_BYTES = 32
#: bcrypt's lowest cost, and a highest one still usable: each step doubles a check's time
#: (cost 16 is ~4 s on 2 cores; 31, bcrypt's own bound, would be a day and a half a login).
BCRYPT_COSTS = (4, 16)
#: A token carries the issuer and audience in every request (a 4 KB cookie, 8 KB of headers).
MAX_CLAIM_TEXT_CHARS = 256
#: BigQuery's query timeout: below a second even the stand-in's answer to `transform`'s
#: first check came too late ("Timeout of 0.0s exceeded"), and past a day the client's
#: deadline overflowed (500s).
BQ_QUERY_TIMEOUT_RANGE = (1.0, 86400.0)
MAX_TOKEN_TTL_SECONDS = 24 * 3600
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG_PATH = Path("data") / "pipeline_config.yaml"


class ConfigError(ValueError):
    """The configuration is unusable; the message names the setting and what was found."""


# Every sum a mart makes must fit BigQuery's NUMERIC (29 digits before the point): a price
# of 15 digits x a quantity of 3 leaves 11 digits of headroom for summing rows. A longer
# price is rejected as invalid_price (README, "What is loaded").
MAX_PRICE_INTEGER_DIGITS = 15
# The marts index products (the trends query's prefix scan and the product-month grain);
# a btree entry holds at most ~2.7 kB, 500 characters of UTF-8 at most 2 kB.
MAX_PRODUCT_CHARS = 500


@dataclass(frozen=True)
class ValidationRules:
    """The CSV row rules of ``ingestion.validation``."""

    min_price: Decimal = Decimal("10.0")
    max_quantity: int = 100
    max_decimals: int = 2
    product_prefix: str = "Halal"
    required_fields: tuple[str, ...] = ("transaction_id", "product", "price", "quantity", "date")

    @property
    def lowest_price(self) -> Decimal:
        """The lowest price a row may have: the minimum rounded up to the decimals allowed."""
        step = Decimal(1).scaleb(-self.max_decimals)
        return self.min_price.quantize(step, rounding=ROUND_CEILING)


#: What ``security.pii_fields`` may name: a transaction's fields and the summary's columns.
#: (beside the columns ``ingestion.validation.required_fields`` adds, and the facts' own).
MASKABLE_FIELDS = tuple(
    dict.fromkeys((*ValidationRules.required_fields, "sale_date", "amount", *SUMMARY_COLUMNS))
)


@dataclass(frozen=True)
class BigQuerySettings:
    project: str = "salesmart-local"  # LOCAL_PROJECT
    location: str = "US"
    warehouse_dataset: str = "transactions_warehouse"
    mart_dataset: str = "transactions_mart"
    # Set for a local stand-in (``http://127.0.0.1:PORT``); empty means real BigQuery.
    api_endpoint: str = ""
    credentials_file: str = ""
    maximum_bytes_billed: int = 1_000_000_000
    query_timeout_seconds: float = 10.0

    @property
    def is_emulated(self) -> bool:
        return bool(self.api_endpoint)

    @property
    def needs_stand_in(self) -> bool:
        """Whether only the local stand-in can answer: no endpoint given, and no real
        BigQuery configured (a project other than the local placeholder, or a
        service-account file)."""
        return not self.api_endpoint and not self.credentials_file and self.project == LOCAL_PROJECT


#: The placeholder project of the local setup (``data/pipeline_config.yaml``): only the
#: local stand-in answers to it.
LOCAL_PROJECT = BigQuerySettings.project


@dataclass(frozen=True)
class Settings:
    env: str = "prod"
    config_path: Path = DEFAULT_CONFIG_PATH
    state_dir: Path = Path(".salesmart")
    database_url: str = ""
    raw_schema: str = "raw"
    mart_schema: str = "public"
    jwt_secret: str = field(default="", repr=False)
    pii_key: str = field(default="", repr=False)
    jwt_issuer: str = "salesmart"
    jwt_audience: str = "salesmart-api"
    token_ttl_seconds: int = 1800
    login_max_failures: int = 5
    login_window_seconds: int = 300
    bcrypt_rounds: int = 12
    pii_fields: tuple[str, ...] = ("transaction_id", "product")
    landing: str = "data/landing"
    validation: ValidationRules = field(default_factory=ValidationRules)
    bigquery: BigQuerySettings = field(default_factory=BigQuerySettings)
    #: The config file's keys that nothing reads, one sentence each (``config_warnings``).
    config_warnings: tuple[str, ...] = ()

    @property
    def is_dev(self) -> bool:
        return self.env == "dev"

    def require_secrets(self, *, jwt: bool = True, pii: bool = True) -> None:
        """Refuse to run with missing or short secrets outside local development (the
        functions need both; a loading command only the PII key)."""
        wanted = [("SALESMART_JWT_SECRET", self.jwt_secret)] if jwt else []
        wanted += [("SALESMART_PII_KEY", self.pii_key)] if pii else []
        problems = []  # all of them at once: a pod refused once per missing key took rounds
        for name, value in wanted:
            if value != value.strip():
                # A key is its bytes as given, and a Secret made from a file keeps the file's
                # line end in the variable, where NAME_FILE drops it: one Secret gave two
                # masking keys. Refused rather than trimmed (a trimmed key would change the
                # masked ids of rows already loaded under it).
                problems.append(
                    f"{name} starts or ends with white space (a file's line end?): give it"
                    " without (the README's 'A key with white space around it' says what"
                    " that changes)"
                )
            elif self.is_dev:
                # Any length locally, but never none: an empty key signs forgeable tokens.
                # (A local run makes its keys: common.local_run.serving_settings.)
                if not value:
                    problems.append(f"{name} is empty")
            elif len(value.encode()) < MIN_SECRET_BYTES:
                state = "missing" if not value else f"only {len(value.encode())} bytes"
                problems.append(
                    f"{name} is {state}; at least {MIN_SECRET_BYTES} bytes are required "
                    f"outside SALESMART_ENV=dev"
                )
        if not problems and jwt and pii and not self.is_dev and self.jwt_secret == self.pii_key:
            # One key's leak (a masking key is given to every function) would give both.
            problems.append(
                "SALESMART_JWT_SECRET and SALESMART_PII_KEY are the same: give each its own key"
                " outside SALESMART_ENV=dev"
            )
        if problems:
            raise ConfigError("; ".join(problems))


def require_database(settings: Settings, *, password_required: bool = True) -> None:
    """Refuse a missing or malformed database URL, one naming a TLS file that is not there,
    and outside dev a password shorter than the other secrets (a client certificate stands
    in for it). The functions check at start; a deployment's commands that use PostgreSQL
    (the migration Job) refuse a short password too, but not a missing one
    (``password_required=False``): libpq may find theirs in a ``.pgpass`` file, or the role
    may log in without one (IAM)."""
    if not settings.database_url:
        beside = ", and no salesmart up runs in this folder" if settings.is_dev else ""
        raise ConfigError(
            f"SALESMART_DATABASE_URL is missing (postgresql://user:pass@host/db){beside}"
        )
    from common.pg import parse_dsn

    params = parse_dsn(settings.database_url)  # a malformed URL stops the start, not a request
    _require_tls_files(params.ssl_files)
    if settings.is_dev or any(key == "sslcert" for key, _ in params.ssl_files):
        return  # a local run's password is the embedded server's; a client certificate is a key
    # The database password is one of the deployment's secrets: held to the same length.
    password = params.password_or_env(os.environ)
    size = len(password.encode())
    if size < MIN_SECRET_BYTES and (size or password_required):
        state = "no password" if not size else f"a password of only {size} bytes"
        raise ConfigError(
            f"SALESMART_DATABASE_URL has {state}; at least {MIN_SECRET_BYTES} bytes are"
            " required outside SALESMART_ENV=dev (or a client certificate: sslcert=)"
        )


def _require_tls_files(ssl_files: Sequence[tuple[str, str]]) -> None:
    """A TLS file the database URL names must be a readable file: otherwise libpq fails
    every connection (a root certificate under verify-*), or quietly goes without it (a
    client certificate, a CRL), and a function that started would answer 503 to every
    request while its health check passed. ``sslrootcert=system`` is the CA store."""
    for key, value in ssl_files:
        if key == "sslrootcert" and value == "system":
            continue
        path = Path(value)
        if not path.exists():
            state = "does not exist"
        elif not path.is_file():
            state = "is not a file"
        elif not os.access(path, os.R_OK):
            state = "is not readable"
        else:
            continue
        raise ConfigError(f"SALESMART_DATABASE_URL names {key}={value}, which {state}")


#: Far more than any Google credentials file (a service-account key is ~2.3 KB).
MAX_CREDENTIALS_FILE_BYTES = 1 << 20


def require_bigquery_credentials(bq: BigQuerySettings) -> None:
    """A named credentials file (``GOOGLE_APPLICATION_CREDENTIALS``) must be one: a missing
    or unreadable file, or one that is not a Google credentials JSON object, stops the start
    (a function served, healthy, and answered every query 503). Its content is never shown;
    whether Google accepts the key is known at the first query (importing google-auth here
    would cost every cold start). No file is fine: the platform's credentials (ADC)."""
    if not bq.credentials_file or bq.is_emulated:
        return
    name = f"GOOGLE_APPLICATION_CREDENTIALS={bq.credentials_file}"
    path = Path(bq.credentials_file)
    try:
        if not stat.S_ISREG(path.stat().st_mode):  # a FIFO would hang the start
            raise ConfigError(f"{name} is not a regular file")
        with path.open("rb") as handle:
            text = handle.read(MAX_CREDENTIALS_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{name} cannot be read ({exc.strerror})") from None
    try:
        data = json.loads(text) if len(text) <= MAX_CREDENTIALS_FILE_BYTES else None
    except ValueError:
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise ConfigError(f'{name} is not a Google credentials file (a JSON object with a "type")')


#: A PostgreSQL schema name every tool reads alike (see ``_schema_name``).
SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def _schema_name(value: str, what: str) -> str:
    """A PostgreSQL schema name every tool reads alike: lower case, unquoted (dbt, the SQL
    of the commands and the functions; ``Marts`` would be two schemas to them)."""
    if not SCHEMA_NAME.fullmatch(value):
        raise ConfigError(
            f"{what} must be a lower-case PostgreSQL name (letters, digits, _; at most 63),"
            f" not {value!r}"
        )
    if value.startswith("pg_"):  # PostgreSQL's own: CREATE SCHEMA refuses them
        raise ConfigError(f"{what} must not start with pg_ (PostgreSQL's own), found {value!r}")
    return value


def _raw_schema(value: object) -> str:
    # The migrations create `raw` (and `auth`): another name would be read by ingest and dbt
    # but never created.
    if value != "raw":
        raise ConfigError(
            "data_warehouse.postgres.raw_schema must be raw (the migrations create it),"
            f" not {value!r}"
        )
    return "raw"


def _secret(environ: dict[str, str], name: str) -> str:
    """A secret from ``NAME`` or from the file named by ``NAME_FILE`` (a mounted Secret),
    without the file's final line end (what an editor or ``echo`` adds; any other white
    space is the key's, which ``require_secrets`` refuses)."""
    value = environ.get(name, "")
    if value:
        return value
    path = environ.get(f"{name}_FILE", "")
    if path:
        try:
            text = Path(path).read_text(encoding="utf-8")
            return text.removesuffix("\n").removesuffix("\r")
        except OSError as exc:
            raise ConfigError(f"{name}_FILE={path} cannot be read ({exc.strerror})") from None
    return ""


def _absolute(path: str) -> str:
    return str(Path(path).absolute()) if path else ""


def _section(data: dict[str, Any], *keys: str) -> dict[str, Any]:
    """A section of the file; {} when absent (``config_warnings`` has refused one that is
    no mapping)."""
    node: Any = data
    for key in keys:
        node = node.get(key) if isinstance(node, dict) else None
        if node is None:
            return {}
    if not isinstance(node, dict):
        raise ConfigError(f"{'.'.join(keys)} must be a mapping (a section of keys)")
    return node


#: A project id as BigQuery takes it (``domain.com:project`` included); a dataset's name.
BQ_PROJECT_ID = re.compile(r"[a-z0-9][a-z0-9.:-]{0,127}", re.ASCII)
BQ_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,1023}", re.ASCII)
_PROJECT_RULE = "project id (lower-case letters, digits, -, . and :)"
_DATASET_RULE = "dataset name (letters, digits and _, not starting with a digit)"


def _bq_name(
    env: Mapping[str, str],
    variable: str,
    section: Mapping[str, Any],
    path: str,
    default: str,
    project: bool = False,
) -> str:
    """A BigQuery project id or dataset name, checked when the settings are read: a bad one
    found only at the first query made a function go Ready and fail every request."""
    value, name = _setting(env, variable, section, path, default)
    pattern, rule = (BQ_PROJECT_ID, _PROJECT_RULE) if project else (BQ_NAME, _DATASET_RULE)
    # An empty value is not "None"; an unquoted number (a project id) is its digits.
    text = str(value) if isinstance(value, str | int) and not isinstance(value, bool) else ""
    if not pattern.fullmatch(text):
        raise ConfigError(f"{name} must be a valid BigQuery {rule}, found {value!r}")
    return text


def whole_number(value: Any, name: str, minimum: int = 0, maximum: int | None = None) -> int:
    # Only a whole number's own spellings: int() would also take `true` (1) and cut 2.9 to 2.
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ConfigError(f"{name} must be an integer, found {value!r}")
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"{name} must be an integer, found {value!r}") from None
    if number < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, found {number}")
    if maximum is not None and number > maximum:
        raise ConfigError(f"{name} must be <= {maximum}, found {number}")
    return number


def positive_seconds(value: Any, name: str, bounds: tuple[float, float] | None = None) -> float:
    if isinstance(value, bool):  # float(True) would be 1 second
        raise ConfigError(f"{name} must be a number of seconds, found {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number of seconds, found {value!r}") from None
    if not number > 0 or number == float("inf"):
        raise ConfigError(f"{name} must be a positive number of seconds, found {value!r}")
    if bounds is not None and not bounds[0] <= number <= bounds[1]:
        raise ConfigError(
            f"{name} must be from {bounds[0]:g} to {bounds[1]:g} seconds, found {value!r}"
        )
    return number


def _setting(
    env: Mapping[str, str], variable: str, section: Mapping[str, Any], path: str, default: Any
) -> tuple[Any, str]:
    """A setting's raw value and the name to blame for it: the environment variable when set,
    else the config file's key (``section.key``), else the default."""
    if env.get(variable):
        return env[variable], variable
    return section.get(path.rsplit(".", 1)[-1], default), path


def serving_threads(environ: Mapping[str, str]) -> int:
    """Threads per serving process: ``THREADS`` as functions-framework reads it, else 4 x
    CPUs (its default). The PostgreSQL pool holds as many connections, so no request waits
    for one: both read this one function."""
    raw = environ.get("THREADS", "")
    if not raw:
        return (os.cpu_count() or 1) * 4
    return whole_number(raw, "THREADS", minimum=1)


def _decimal(value: Any, name: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise ConfigError(f"{name} must be a number, found {value!r}")
    text = str(value)
    if isinstance(value, YamlFloat) and _PLAIN_DECIMAL.fullmatch(value.text):
        text = value.text.replace("_", "")  # as written, not as a float rounds it
    try:
        number = Decimal(text)
    except InvalidOperation:
        raise ConfigError(f"{name} must be a number, found {value!r}") from None
    if not number.is_finite() or number < 0:
        raise ConfigError(f"{name} must be a finite number >= 0, found {value!r}")
    return number.copy_abs()  # -0.0 is 0 (dbt's rule takes no sign)


def _text(value: Any, name: str) -> str:
    """A setting that is a non-empty string, or a whole number written unquoted (YAML reads
    `2024` as one): YAML's empty value (None), `true` or a list would otherwise be used as
    their Python spelling ("None", "True", "['Halal']")."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{name} must be a non-empty string, found {value!r}")
    return value


class YamlFloat(float):
    """A YAML float that keeps its text: ``min_price: 100000000000000.01`` is that number,
    where a float is ``...02`` (a price at the minimum was then refused)."""

    text: str


class _ConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader, its floats ``YamlFloat``, a key given twice refused (PyYAML
    keeps the last: a second ``ingestion:`` section reset the first one's thresholds to
    the defaults without a word). Checked as each mapping is parsed, before merge keys
    (``<<``) are applied, whose values may be overridden. The DAG file's loader does the
    same (dags/transform_sales_mart.py: it cannot import this module)."""

    def compose_mapping_node(self, anchor: Any) -> yaml.MappingNode:
        node = super().compose_mapping_node(anchor)
        seen: set[tuple[str, str]] = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE_TAG:
                continue
            if (key_node.tag, key_node.value) in seen:
                raise yaml.composer.ComposerError(
                    None, None, f"the key {key_node.value!r} is given twice", key_node.start_mark
                )
            seen.add((key_node.tag, key_node.value))
        return node


_MERGE_TAG = "tag:yaml.org,2002:merge"


def _float_with_text(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> float:
    number = YamlFloat(loader.construct_yaml_float(node))
    number.text = str(node.value)
    return number


_ConfigLoader.add_constructor("tag:yaml.org,2002:float", _float_with_text)
_PLAIN_DECIMAL = re.compile(r"[-+]?[0-9_]*\.?[0-9_]*(?:[eE][-+]?[0-9]+)?")


def read_config_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror})") from None
    except UnicodeDecodeError as exc:  # worded as a transactions file's (csvsource)
        where = not_utf8_at(exc.object[: exc.start])
        raise ConfigError(f"{path}: not UTF-8 text ({where})") from None
    try:
        data = yaml.load(text, Loader=_ConfigLoader) or {}  # noqa: S506 - a SafeLoader  # nosec B506
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or exc.__class__.__name__
        raise ConfigError(f"{path}: not valid YAML ({problem}{where})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return data


#: Every key the config file may hold (``None``: a value), the DAG's ``orchestration`` too.
CONFIG_KEYS: dict[str, Any] = {
    "data_lake": {"landing": None},
    "data_warehouse": {
        "project_id": None,
        "dataset": None,
        "location": None,
        "postgres": {"raw_schema": None, "mart_schema": None},
    },
    "data_mart": {"dataset": None},
    "ingestion": {
        "validation": dict.fromkeys(
            ("min_price", "max_quantity", "max_decimals", "product_prefix", "required_fields")
        )
    },
    "orchestration": dict.fromkeys(("schedule", "retries", "retry_delay_seconds")),
    "api": dict.fromkeys(
        (
            "token_ttl_seconds",
            "jwt_issuer",
            "jwt_audience",
            "login_max_failures",
            "login_window_seconds",
            "bcrypt_rounds",
        )
    ),
    "bigquery": dict.fromkeys(("maximum_bytes_billed", "query_timeout_seconds")),
    "security": {"pii_fields": None},
}
_SECRET_WORDS = ("secret", "password", "passwd", "credential", "hmac")
_SECRET_KEY_ENDS = ("pii_key", "jwt_key", "api_key", "private_key", "signing_key")
_SECRET_KEYS = frozenset({"key", "token"})
#: In a key that is no plain name (`jwt_key=abc…`, `password hunter2`): maybe a secret typed in.
_SECRETISH = ("secret", "passw", "passwd", "credential", "hmac", "key", "token")
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]{1,64}", re.ASCII)


def config_warnings(data: Mapping[str, Any]) -> tuple[str, ...]:
    """One sentence per key of a config file that nothing reads: a misspelt key
    (``max_decimal``) would otherwise change nothing, unsaid, and so would the connection
    fields and secrets a configuration written for the original design holds. A known
    section that is not a mapping is refused (``ConfigError``), read or not (the DAG's)."""
    found: list[str] = []

    def walk(node: Mapping[str, Any], known: Mapping[str, Any], path: str) -> None:
        for key, value in node.items():
            text = str(key)
            lower = text.lower()
            if _PLAIN_KEY.fullmatch(text):
                name = f"{path}{text}"
                secret = (
                    lower in _SECRET_KEYS
                    or lower.endswith(_SECRET_KEY_ENDS)
                    or any(word in lower for word in _SECRET_WORDS)
                )
            else:  # never a line break, a terminal code, or a value typed into a key
                secret = any(word in lower for word in _SECRETISH)
                name = f"{path}<a key not shown>" if secret else f"{path}{text!r:.40}"
            if key in known:
                if isinstance(known[key], dict) and value is not None:
                    if not isinstance(value, dict):
                        raise ConfigError(f"{name} must be a mapping (a section of keys)")
                    walk(value, known[key], f"{name}.")
                continue
            close = difflib.get_close_matches(text, [str(k) for k in known], n=1)
            if secret:
                found.append(
                    f"{name} is not read: secrets come from the environment or mounted files only"
                )
            elif close:
                found.append(f"{name} is not a setting; did you mean {path}{close[0]}?")
            elif path == "data_warehouse.postgres.":
                found.append(f"{name} is not read: the database is SALESMART_DATABASE_URL")
            else:
                found.append(f"{name} is not a setting")

    walk(data, CONFIG_KEYS, "")
    return tuple(found)


#: Checked when the settings are read, not at a load that has already filled one warehouse:
#: a price keeps at most 9 decimals in BigQuery's NUMERIC, a quantity fits PostgreSQL's
#: ``integer`` (raw.transactions).
MAX_DECIMALS_LIMIT = 9
PG_INTEGER_MAX = 2**31 - 1
#: A lock window of a year at most: its end is a timestamp, and a pruning query multiplies it.
MAX_LOGIN_WINDOW_SECONDS = 366 * 86400


def _validation_rules(data: dict[str, Any]) -> ValidationRules:
    section = _section(data, "ingestion", "validation")
    defaults = ValidationRules()
    prefix = _text(
        section.get("product_prefix", defaults.product_prefix),
        "ingestion.validation.product_prefix",
    )
    if prefix[0].isspace():  # products are trimmed: no product could start with it
        raise ConfigError(
            f"ingestion.validation.product_prefix must not start with a space, found {prefix!r}"
        )
    if not is_prefix_char(prefix[0]):
        # Rows loaded under it would be in the marts and in no answer: the trends APIs'
        # product_prefix (letters, digits, spaces, hyphens) could not name their first
        # character. (`Dr. Oetker` is asked for as `Dr`.)
        raise ConfigError(
            "ingestion.validation.product_prefix must start with a letter, a digit or a"
            f" hyphen (what the trends APIs' product_prefix can name), found {prefix!r}"
        )
    if len(prefix) > MAX_PRODUCT_CHARS:  # no product loaded could be that long
        raise ConfigError(
            f"ingestion.validation.product_prefix must be at most {MAX_PRODUCT_CHARS}"
            f" characters, found {len(prefix)}"
        )
    required = section.get("required_fields", list(defaults.required_fields))
    # Headers are trimmed: a name with spaces around it would be in no file.
    if not isinstance(required, list) or not all(
        isinstance(x, str) and x and x == x.strip() for x in required
    ):
        raise ConfigError("ingestion.validation.required_fields must be a list of column names")
    rules = ValidationRules(
        min_price=_decimal(
            section.get("min_price", defaults.min_price), "ingestion.validation.min_price"
        ),
        max_quantity=whole_number(
            section.get("max_quantity", defaults.max_quantity),
            "ingestion.validation.max_quantity",
            minimum=1,
            maximum=PG_INTEGER_MAX,
        ),
        max_decimals=whole_number(
            section.get("max_decimals", defaults.max_decimals),
            "ingestion.validation.max_decimals",
            maximum=MAX_DECIMALS_LIMIT,
        ),
        product_prefix=prefix,
        required_fields=tuple(required),
    )
    # The lowest price a row may have must be one a price can be: at most 15 digits before
    # the point (the minimum first: rounding 1e400 to cents would fail, unsaid).
    if rules.min_price >= 10**MAX_PRICE_INTEGER_DIGITS or (
        rules.lowest_price >= 10**MAX_PRICE_INTEGER_DIGITS
    ):
        raise ConfigError(
            f"ingestion.validation.min_price must be below 10^{MAX_PRICE_INTEGER_DIGITS}"
            f" (prices have at most {MAX_PRICE_INTEGER_DIGITS} digits before the point),"
            f" found {format(rules.min_price, 'f')}"
        )
    return rules


#: The environment's secrets (and their ``_FILE`` forms): kept from child processes that
#: need none of them (dbt, the BigQuery stand-in), whose logs or SQL might show them.
SECRET_VARIABLES = frozenset(
    {
        *(
            f"SALESMART_{name}{suffix}"
            for name in ("DATABASE_URL", "JWT_SECRET", "PII_KEY")
            for suffix in ("", "_FILE")
        ),
        "SALESMART_ADMIN_PASSWORD",
    }
)


def without_secrets(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` less ``SECRET_VARIABLES``."""
    return {key: value for key, value in environ.items() if key not in SECRET_VARIABLES}


def _config_file(env: Mapping[str, str]) -> Path:
    """The configuration file: ``SALESMART_CONFIG``, else the default one."""
    named = env.get("SALESMART_CONFIG")
    config_path = Path(named or DEFAULT_CONFIG_PATH)
    if not config_path.is_absolute() and not config_path.exists():
        # Functions may run from any working directory; fall back to the repository copy.
        config_path = REPO_ROOT / config_path
    if named and not config_path.exists():  # a typo must not quietly mean the defaults
        raise ConfigError(f"SALESMART_CONFIG={named}: no such file")
    return config_path


def _bigquery_settings(env: Mapping[str, str], data: dict[str, Any]) -> BigQuerySettings:
    warehouse = _section(data, "data_warehouse")
    bq = _section(data, "bigquery")
    # The first of these set names the project (and takes the blame for a bad one).
    project_variable = next(
        (name for name in ("SALESMART_BQ_PROJECT", "GOOGLE_CLOUD_PROJECT") if env.get(name)),
        "SALESMART_BQ_PROJECT",
    )
    settings = BigQuerySettings(
        project=_bq_name(
            env,
            project_variable,
            warehouse,
            "data_warehouse.project_id",
            BigQuerySettings.project,
            project=True,
        ),
        location=env.get("SALESMART_BQ_LOCATION")
        or _text(warehouse.get("location", BigQuerySettings.location), "data_warehouse.location"),
        warehouse_dataset=_bq_name(
            env,
            "SALESMART_BQ_WAREHOUSE_DATASET",
            warehouse,
            "data_warehouse.dataset",
            BigQuerySettings.warehouse_dataset,
        ),
        mart_dataset=_bq_name(
            env,
            "SALESMART_BQ_MART_DATASET",
            _section(data, "data_mart"),
            "data_mart.dataset",
            BigQuerySettings.mart_dataset,
        ),
        api_endpoint=env.get("SALESMART_BQ_ENDPOINT", ""),
        # Absolute: functions and dbt run from other folders than the command that reads it.
        credentials_file=_absolute(env.get("GOOGLE_APPLICATION_CREDENTIALS", "")),
        maximum_bytes_billed=whole_number(
            *_setting(
                env,
                "SALESMART_BQ_MAX_BYTES_BILLED",
                bq,
                "bigquery.maximum_bytes_billed",
                BigQuerySettings.maximum_bytes_billed,
            ),
            minimum=1,
        ),
        query_timeout_seconds=positive_seconds(
            *_setting(
                env,
                "SALESMART_BQ_QUERY_TIMEOUT",
                bq,
                "bigquery.query_timeout_seconds",
                BigQuerySettings.query_timeout_seconds,
            ),
            BQ_QUERY_TIMEOUT_RANGE,
        ),
    )
    # Raw and rejected rows (clear ids, rejected lines) never live in the marts: the marts'
    # readers (trends_bq, analysts) are granted the whole dataset. Compared in any case: the
    # local stand-in, and a case-insensitive dataset, take WH and wh for one.
    if settings.mart_dataset.casefold() == settings.warehouse_dataset.casefold():
        # Each side named as it was given (a variable when set, else the file's key), the
        # one a variable set first: the file's may be the default's.
        mart_variable = bool(env.get("SALESMART_BQ_MART_DATASET"))
        raw_variable = bool(env.get("SALESMART_BQ_WAREHOUSE_DATASET"))
        mart = "SALESMART_BQ_MART_DATASET" if mart_variable else "data_mart.dataset"
        raw = "SALESMART_BQ_WAREHOUSE_DATASET" if raw_variable else "data_warehouse.dataset"
        first, second = (raw, mart) if raw_variable and not mart_variable else (mart, raw)
        raise ConfigError(
            f"{first} must name a dataset of its own, not the same as {second}"
            f" ({settings.mart_dataset!r}, {settings.warehouse_dataset!r}): raw and rejected"
            " rows never live in the marts"
        )
    return settings


def _claim_text(value: Any, name: str) -> str:
    text = _text(value, name)
    # As a token carries it: JSON with ASCII escapes (a non-ASCII character takes 6 or 12).
    encoded = len(json.dumps(text)) - 2
    if encoded > MAX_CLAIM_TEXT_CHARS:  # longer tokens are refused (and cookies dropped)
        raise ConfigError(
            f"{name} must be at most {MAX_CLAIM_TEXT_CHARS} characters as a token carries"
            f" it (a non-ASCII character counts 6), found {encoded}"
        )
    return text


def _mart_schema(env: Mapping[str, str], postgres: dict[str, Any]) -> str:
    value, name = _setting(
        env,
        "SALESMART_PG_MART_SCHEMA",
        postgres,
        "data_warehouse.postgres.mart_schema",
        Settings.mart_schema,
    )
    schema = _schema_name(_text(value, name), name)
    if schema in NOT_MART_SCHEMAS:
        # Their readers would be granted the marts' schema (README, least privilege).
        raise ConfigError(
            f"{name} must name a schema of its own, not {schema!r}: it holds"
            f" {NOT_MART_SCHEMAS[schema]}"
        )
    return schema


#: The schemas the marts must not share, and what they hold.
NOT_MART_SCHEMAS = {
    "raw": "the raw and rejected rows",
    "staging": "dbt's staging view of the raw rows",
    "auth": "the accounts and sessions",
    "salesmart_meta": "the migrations' record",
    "information_schema": "PostgreSQL's catalogue",
}


def _token_ttl_seconds(env: Mapping[str, str], api: dict[str, Any]) -> int:
    ttl_value, ttl_name = _setting(
        env, "SALESMART_TOKEN_TTL_SECONDS", api, "api.token_ttl_seconds", Settings.token_ttl_seconds
    )
    ttl = whole_number(ttl_value, ttl_name, minimum=1)
    if ttl > MAX_TOKEN_TTL_SECONDS:
        raise ConfigError(f"{ttl_name} must be at most one day (86400), found {ttl}")
    return ttl


def _pii_fields(data: dict[str, Any], validation: ValidationRules) -> tuple[str, ...]:
    pii_fields = _section(data, "security").get("pii_fields", list(Settings.pii_fields))
    if not isinstance(pii_fields, list):
        raise ConfigError("security.pii_fields must be a list of field names")
    fields = tuple(dict.fromkeys((*MASKABLE_FIELDS, *validation.required_fields)))
    unknown = [field for field in pii_fields if field not in fields]
    if unknown:  # a misspelt name ("Product") would show that field in clear, unsaid
        raise ConfigError(
            f"security.pii_fields: {unknown[0]!r} is not a field; the fields are"
            f" {', '.join(fields)}"
        )
    return tuple(pii_fields)


def build_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build settings from an environment mapping (``os.environ`` by default)."""
    env = dict(os.environ if environ is None else environ)
    config_path = _config_file(env)
    data = read_config_file(config_path)
    try:
        return _settings(env, config_path, data)
    except ConfigError as error:
        if str(error).partition(" ")[0].partition(".")[0] in CONFIG_KEYS:
            # A key of the file (``api.login_max_failures ...``): name the file, as its
            # warnings do (another may be meant); an environment variable names itself.
            raise ConfigError(f"{config_path}: {error}") from None
        raise


def _settings(env: dict[str, str], config_path: Path, data: dict[str, Any]) -> Settings:
    warnings = config_warnings(data)  # and a known section that is no mapping refused
    postgres = _section(data, "data_warehouse", "postgres")
    api = _section(data, "api")
    # In this order, as their errors are raised (each stops at the first).
    bigquery = _bigquery_settings(env, data)
    token_ttl_seconds = _token_ttl_seconds(env, api)
    validation = _validation_rules(data)
    pii_fields = _pii_fields(data, validation)
    _check_orchestration(_section(data, "orchestration"))
    return Settings(
        # Exactly "dev" relaxes the secrets; any other value (also "Dev") is production.
        env=env.get("SALESMART_ENV") or "prod",
        config_path=config_path,
        state_dir=Path(env.get("SALESMART_STATE_DIR") or ".salesmart"),
        database_url=_secret(env, "SALESMART_DATABASE_URL"),
        raw_schema=_raw_schema(postgres.get("raw_schema", Settings.raw_schema)),
        mart_schema=_mart_schema(env, postgres),
        jwt_secret=_secret(env, "SALESMART_JWT_SECRET"),
        pii_key=_secret(env, "SALESMART_PII_KEY"),
        jwt_issuer=_claim_text(api.get("jwt_issuer", Settings.jwt_issuer), "api.jwt_issuer"),
        jwt_audience=_claim_text(
            api.get("jwt_audience", Settings.jwt_audience), "api.jwt_audience"
        ),
        token_ttl_seconds=token_ttl_seconds,
        # Counted in PostgreSQL integers (auth.login_failures).
        login_max_failures=whole_number(
            api.get("login_max_failures", Settings.login_max_failures),
            "api.login_max_failures",
            1,
            PG_INTEGER_MAX,
        ),
        login_window_seconds=whole_number(
            api.get("login_window_seconds", Settings.login_window_seconds),
            "api.login_window_seconds",
            1,
            MAX_LOGIN_WINDOW_SECONDS,
        ),
        bcrypt_rounds=whole_number(
            *_setting(
                env, "SALESMART_BCRYPT_ROUNDS", api, "api.bcrypt_rounds", Settings.bcrypt_rounds
            ),
            minimum=BCRYPT_COSTS[0],
            maximum=BCRYPT_COSTS[1],
        ),
        pii_fields=pii_fields,
        landing=env.get("SALESMART_LANDING")
        or _text(_section(data, "data_lake").get("landing", Settings.landing), "data_lake.landing"),
        validation=validation,
        bigquery=bigquery,
        config_warnings=warnings,
    )


def _check_orchestration(section: dict[str, Any]) -> None:
    """The DAG's keys, checked as the DAG checks them (dags/transform_sales_mart.py), so a
    bad value stops every command, not only the DAG's import in Airflow. Whether a schedule
    is a cron expression Airflow runs is the DAG's to say (croniter is Airflow's)."""
    whole_number(section.get("retries", 3), "orchestration.retries", 0, 100)
    whole_number(
        section.get("retry_delay_seconds", 300), "orchestration.retry_delay_seconds", 1, 86400
    )
    schedule = section.get("schedule", "0 0 * * *")
    if schedule is not None and not (isinstance(schedule, str) and schedule.strip()):
        raise ConfigError(
            "orchestration.schedule must be a cron expression, an Airflow preset (@daily ...)"
            f" or null, found {schedule!r}"
        )


@functools.cache
def get_settings() -> Settings:
    """The process-wide settings, read from the environment once."""
    return build_settings()
