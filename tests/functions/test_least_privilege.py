"""The README's least-privilege setup on PostgreSQL, run as written: an owner role migrates,
loads and builds the marts; an administrator runs the README's SQL for the functions' role;
the four PostgreSQL paths of the functions (token, trends_pg, the dashboard's login, page and
logout) then work as that role, and keep working after dbt rebuilds the marts (a rebuild
replaces each table: grants made on the old one went with it, and trends_pg answered 500)."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import pytest

from common.pg import connect, parse_dsn
from pipeline.migrate import migrate_database
from pipeline.postgres_embedded import EmbeddedPostgres
from pipeline.transform import run_dbt
from tests.conftest import REPO_ROOT
from tests.functions.conftest import Account, caller, load_function, load_marts, settings_for
from tests.functions.conftest import make_user as make_account
from tests.functions.test_dashboard_unit import (
    BROWSER,
    CSRF,
    SESSION,
    cookie_header,
    csrf_from,
    log_in,
    set_cookies,
)

MARKER = "<!-- least-privilege.sql: run as written by tests/functions/test_least_privilege.py -->"
PASSWORD_IN_README = "a random password of 32 bytes or more"
FUNCTIONS_PASSWORD = "functions-role-" + "f" * 32


def readme_sql() -> tuple[str, str]:
    """The two SQL blocks that follow the marker in README.md (the administrator's, the
    owner's), unindented."""
    after = (REPO_ROOT / "README.md").read_text().split(MARKER, 1)[1]
    blocks = re.findall(r"```sql\n(.*?)\n\s*```", after, re.DOTALL)[:2]
    assert len(blocks) == 2, "README.md: two ```sql blocks expected after the marker"
    admin, owner = ("\n".join(line.strip() for line in b.splitlines()) for b in blocks)
    return admin, owner


def as_user(dsn: str, user: str, password: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{parts.hostname}:{parts.port}"))


AS_ON_POSTGRESQL_14 = "before the first build, public as on PostgreSQL 14"


@pytest.fixture(params=["before the first build", "after the first build", AS_ON_POSTGRESQL_14])
def setup(
    request: pytest.FixtureRequest, pg_server: EmbeddedPostgres, tmp_path: Path
) -> Iterator[dict[str, Any]]:
    """The README's SQL run once `migrate` has made `auth`: before the marts exist (the
    default privileges give them), or once they do (granted on all tables, then given
    again by the default privileges at each rebuild)."""
    suffix = secrets.token_hex(4)
    owner, functions, database = f"owner_{suffix}", f"fn_{suffix}", f"lp_{suffix}"
    administrator = f"admin_{suffix}"  # not a superuser: a managed database's admin
    superuser = connect(pg_server.database_dsn("postgres"))
    superuser.run(f"CREATE ROLE {administrator} LOGIN CREATEROLE PASSWORD 'admin-password'")
    superuser.run(f"CREATE ROLE {owner} LOGIN PASSWORD 'owner-password'")
    superuser.run(f"CREATE DATABASE {database} OWNER {owner}")
    owner_dsn = as_user(pg_server.database_dsn(database), owner, "owner-password")
    admin_dsn = as_user(pg_server.database_dsn(database), administrator, "admin-password")
    migrate_database(owner_dsn)
    names = {
        "salesmart_owner": owner,
        "salesmart_functions": functions,
        "DATABASE salesmart ": f"DATABASE {database} ",
        PASSWORD_IN_README: FUNCTIONS_PASSWORD,
    }
    admin_sql, owner_sql = readme_sql()
    for readme_name, ours in names.items():
        assert readme_name in admin_sql + owner_sql, readme_name
        admin_sql, owner_sql = (
            admin_sql.replace(readme_name, ours),
            owner_sql.replace(readme_name, ours),
        )
    if request.param == AS_ON_POSTGRESQL_14:
        # `public` as PostgreSQL 14 and older make it: the bootstrap superuser's, and every
        # role may create in it. The README has a superuser run the administrator's block.
        in_database = connect(pg_server.database_dsn(database))
        try:
            in_database.run(f"ALTER SCHEMA public OWNER TO {parse_dsn(pg_server.dsn).user}")
            in_database.run("GRANT CREATE ON SCHEMA public TO PUBLIC")
        finally:
            in_database.close()
        admin_dsn = pg_server.database_dsn(database)
    if request.param == "after the first build":
        load_marts(owner_dsn, tmp_path)
    for dsn, sql in ((admin_dsn, admin_sql), (owner_dsn, owner_sql)):
        conn = connect(dsn)
        try:
            conn.run(sql)
        finally:
            conn.close()
    if request.param != "after the first build":
        load_marts(owner_dsn, tmp_path)
    try:
        yield {
            "owner_dsn": owner_dsn,
            "functions_dsn": as_user(owner_dsn, functions, FUNCTIONS_PASSWORD),
            "work": tmp_path,
        }
    finally:
        superuser.run(f"DROP DATABASE {database} WITH (FORCE)")
        for role in (functions, owner, administrator):
            superuser.run(f"DROP ROLE {role}")
        superuser.close()


def stored_hash(dsn: str, username: str) -> str:
    conn = connect(dsn)
    try:
        return str(
            conn.run("SELECT password_hash FROM auth.users WHERE username = :u", u=username)[0][0]
        )
    finally:
        conn.close()


def refused_to_the_functions(dsn: str) -> None:
    """What the functions' role must not do: read raw rows, write accounts or roles,
    create objects where the owner's dbt runs."""
    for statement in (
        "SELECT transaction_id FROM raw.transactions LIMIT 1",
        "INSERT INTO auth.users (username, password_hash, role) VALUES ('x', 'x', 'admin')",
        "UPDATE auth.users SET role = 'admin'",
        "DELETE FROM auth.users",
        "CREATE TABLE public.planted (id integer)",
        "CREATE FUNCTION public.planted() RETURNS integer LANGUAGE sql AS 'SELECT 1'",
        "CREATE SCHEMA planted",
        "DELETE FROM public.summary_sales",
        "TRUNCATE auth.login_failures",
        "SELECT * FROM salesmart_meta.schema_migrations",
    ):
        conn = connect(dsn)
        try:
            with pytest.raises(psycopg2.Error) as refused:
                conn.run(statement)
            assert refused.value.pgcode == "42501", (statement, refused.value.pgcode)
        finally:
            conn.close()


def test_the_functions_role_of_the_readme_serves_after_every_rebuild(
    setup: dict[str, Any], flask_app: Any
) -> None:
    owner_dsn, functions_dsn = setup["owner_dsn"], setup["functions_dsn"]
    # Made at cost 4; the functions run at 5, so a right login moves the hash (the UPDATE).
    account: Account = make_account(owner_dsn, "analyst")
    before = stored_hash(owner_dsn, account.username)
    env = {"SALESMART_DATABASE_URL": functions_dsn, "SALESMART_BCRYPT_ROUNDS": "5"}
    with pytest.MonkeyPatch.context() as patch:
        token_call = caller(flask_app, load_function("token", patch, **env).token)
        trends_call = caller(flask_app, load_function("trends_pg", patch, **env).trends_pg)
        board_call = caller(flask_app, load_function("dashboard", patch, **env).dashboard)

        def serves(round_: str) -> None:
            wrong = token_call(
                "/token", method="POST", data={"username": account.username, "password": "no"}
            )
            assert wrong.status_code == 401, (round_, wrong.get_data(as_text=True))
            right = token_call(
                "/token",
                method="POST",
                data={"username": account.username, "password": account.password},
            )
            assert right.status_code == 200, (round_, right.get_data(as_text=True))
            bearer = {"Authorization": f"Bearer {right.get_json()['access_token']}"}
            trends = trends_call("/sales/pg-trends", headers=bearer)
            assert trends.status_code == 200, (round_, trends.get_data(as_text=True))
            assert trends.get_json(), round_
            # The dashboard as a browser uses it: log in, the page, log out (ended_sessions).
            logged_in = log_in(board_call, account)
            assert logged_in.status_code == 303, (round_, logged_in.get_data(as_text=True))
            cookies = {
                SESSION: set_cookies(logged_in)[SESSION][0],
                CSRF: set_cookies(logged_in)[CSRF][0],
            }
            page = board_call("/", headers={**BROWSER, **cookie_header(**cookies)})
            assert page.status_code == 200, (round_, page.get_data(as_text=True)[:500])
            out = board_call(
                "/logout",
                method="POST",
                headers={**BROWSER, **cookie_header(**cookies)},
                data={"csrf_token": csrf_from(page.get_data(as_text=True))},
            )
            assert out.status_code == 303, (round_, out.get_data(as_text=True))
            ended = board_call("/", headers={**BROWSER, **cookie_header(**cookies)})
            assert ended.status_code == 303, round_

        serves("after the first build")
        refused_to_the_functions(functions_dsn)
        assert stored_hash(owner_dsn, account.username) != before  # moved to cost 5
        assert stored_hash(owner_dsn, account.username).startswith("$2b$05$")
        settings = settings_for(setup["owner_dsn"])
        for rebuild in range(2):  # dbt replaces every mart table each time
            run_dbt("postgres", settings, command="run", work_dir=setup["work"] / "dbt")
            serves(f"after rebuild {rebuild + 1}")
