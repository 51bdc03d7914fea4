"""The PostgreSQL pool: reuse, self-healing after a killed backend, fast 503s."""

from __future__ import annotations

import gc
import json
import os
import signal
import threading
import time
from collections.abc import Iterator

import pytest

from common.config import ConfigError, Settings, build_settings
from common.db import PgPool, Statement
from common.errors import WarehouseUnavailable
from common.pg import connect, libpq_ssl_options, parse_dsn, pyformat
from pipeline.netutil import free_port
from pipeline.postgres_embedded import EmbeddedPostgres, _server_owner
from pipeline.transform import TransformError, _postgres_env
from tests.conftest import eventually, scratch_pg_server


def backend_pids(dsn: str, application: str) -> list[int]:
    conn = connect(dsn)
    try:
        rows = conn.run(
            "SELECT pid FROM pg_stat_activity WHERE application_name = :a", a=application
        )
    finally:
        conn.close()
    return [int(row[0]) for row in rows]


def test_connections_are_reused_not_opened_per_request(fresh_dsn: str) -> None:
    pool = PgPool(fresh_dsn, max_size=4, application_name="pool-reuse")
    try:
        for _ in range(50):
            assert pool.run("SELECT CAST(:x AS integer) + 1", x=1) == [[2]]
        assert pool.opened == 1
        assert len(backend_pids(fresh_dsn, "pool-reuse")) == 1
    finally:
        pool.close()


def test_concurrent_callers_share_at_most_max_size(fresh_dsn: str) -> None:
    pool = PgPool(fresh_dsn, max_size=3, application_name="pool-bound")
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(10):
                pool.run("SELECT pg_sleep(0.005)")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert errors == []
        assert 1 <= pool.opened <= 3
    finally:
        pool.close()


def test_a_killed_connection_is_replaced_transparently(fresh_dsn: str) -> None:
    pool = PgPool(fresh_dsn, max_size=2, application_name="pool-heal")
    try:
        assert pool.run("SELECT 1") == [[1]]
        (pid,) = backend_pids(fresh_dsn, "pool-heal")
        admin = connect(fresh_dsn)
        admin.run("SELECT pg_terminate_backend(:pid)", pid=pid)
        admin.close()
        # the backend exits in its own time, not ours
        assert eventually(lambda: pid not in backend_pids(fresh_dsn, "pool-heal"), 10)
        assert pool.run("SELECT 2") == [[2]]  # retried once on a new connection
        assert pool.opened == 2
        assert backend_pids(fresh_dsn, "pool-heal") != [pid]
    finally:
        pool.close()


def test_a_backend_that_stops_answering_does_not_hang_the_call(fresh_dsn: str) -> None:
    """A real fault: the pooled connection's backend process is frozen (SIGSTOP). Its
    kernel still acknowledges, so only the pool's own deadline ends the wait; the call is
    then retried on a new connection (before: it waited as long as the freeze lasted)."""
    pool = PgPool(fresh_dsn, max_size=1, application_name="pool-frozen", statement_timeout_ms=500)
    frozen: list[int] = []
    try:
        assert pool.run("SELECT 1") == [[1]]
        (pid,) = backend_pids(fresh_dsn, "pool-frozen")
        os.kill(pid, signal.SIGSTOP)
        frozen.append(pid)
        answers: list[object] = []
        caller = threading.Thread(target=lambda: answers.append(pool.run("SELECT 2")))
        caller.start()
        caller.join(timeout=30)
        assert not caller.is_alive(), "the call still waits for the frozen backend"
        assert answers == [[[2]]]
        assert pool.opened == 2
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
        pool.close()


def test_a_snapshot_of_several_statements_is_given_up_on_as_one_statement(
    fresh_dsn: str,
) -> None:
    """The watchdog gives each statement of a snapshot its own deadline, not their sum (an
    audit: the dashboard's snapshot of 3 waited 13.5 s on a frozen server, not 4.5)."""
    pool = PgPool(fresh_dsn, max_size=1, application_name="pool-frozen-2", statement_timeout_ms=500)
    frozen: list[int] = []
    statements: list[Statement] = [(f"SELECT {n}", {}) for n in range(6)]
    try:
        assert pool.run_in_one_snapshot(*statements, tables=["pg_class"])[5] == [[5]]
        (pid,) = backend_pids(fresh_dsn, "pool-frozen-2")
        os.kill(pid, signal.SIGSTOP)
        frozen.append(pid)
        started = time.monotonic()
        # Retried on a new connection after one statement's 2.5 s (0.5 s + the grace),
        # where the sum of 7 was 17.5 s.
        assert pool.run_in_one_snapshot(*statements, tables=["pg_class"])[5] == [[5]]
        assert time.monotonic() - started < 10
        assert pool.opened == 2
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
        pool.close()


def test_a_slow_snapshot_is_not_cut_while_each_statement_answers(fresh_dsn: str) -> None:
    # Each statement within its own deadline, together well past one (2.5 s each).
    pool = PgPool(fresh_dsn, max_size=1, statement_timeout_ms=500)
    try:
        slow = [("SELECT pg_sleep(0.4), :n", {"n": n}) for n in range(8)]
        rows = pool.run_in_one_snapshot(*slow)
        assert [row[0][1] for row in rows] == list(range(8))
        assert pool.opened == 1
    finally:
        pool.close()


def test_unreachable_database_is_a_fast_503() -> None:
    pool = PgPool(f"postgresql://u:p@127.0.0.1:{free_port()}/db", max_size=2)
    started = time.monotonic()
    with pytest.raises(WarehouseUnavailable) as caught:
        pool.run("SELECT 1")
    assert time.monotonic() - started < 3
    assert caught.value.status == 503
    assert caught.value.headers["Retry-After"]


def test_statement_timeout_and_missing_marts_are_503(fresh_dsn: str) -> None:
    pool = PgPool(fresh_dsn, max_size=1, statement_timeout_ms=200)
    try:
        with pytest.raises(WarehouseUnavailable):
            pool.run("SELECT pg_sleep(2)")
        with pytest.raises(WarehouseUnavailable):
            pool.run("SELECT * FROM public.summary_sales")  # dbt has not run here
        assert pool.run("SELECT 3") == [[3]]  # the same connection still works
        assert pool.opened == 1
    finally:
        pool.close()


def test_a_refused_session_setup_is_a_503_with_a_log_line(
    fresh_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The server refuses the per-connection setting (here a negative statement timeout,
    which PostgreSQL rejects as 22023): the caller gets a 503 and the operator a reason."""
    pool = PgPool(fresh_dsn, max_size=1, statement_timeout_ms=-1)
    try:
        with pytest.raises(WarehouseUnavailable):
            pool.run("SELECT 1")
    finally:
        pool.close()
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    (setup,) = [e for e in events if e["message"] == "postgres session setup failed"]
    assert setup["severity"] == "WARNING" and setup["sqlstate"] == "22023"


def test_other_database_errors_propagate(fresh_dsn: str) -> None:
    pool = PgPool(fresh_dsn, max_size=1)
    try:
        with pytest.raises(Exception) as caught:
            pool.run("SELECT 1 / 0")
        assert not isinstance(caught.value, WarehouseUnavailable)
        assert pool.run("SELECT 4") == [[4]]
    finally:
        pool.close()


@pytest.mark.parametrize(
    ("host", "mode", "expected"),
    [
        ("127.0.0.1", "prefer", "disable"),  # loopback: the bytes never leave the machine
        ("::1", "allow", "disable"),
        ("localhost", "prefer", "disable"),
        ("127.0.0.1", "disable", "disable"),
        ("db.internal", "disable", "disable"),
        ("db.internal", "prefer", "prefer"),  # libpq tries TLS and falls back
        ("10.0.0.5", "allow", "allow"),
        ("db.internal", "require", "require"),  # encrypted, not verified (libpq's meaning)
        ("127.0.0.1", "require", "require"),  # asked for: never downgraded, even on loopback
    ],
)
def test_sslmode_maps_to_libpq(host: str, mode: str, expected: str) -> None:
    netloc = f"[{host}]" if ":" in host else host
    params = parse_dsn(f"postgresql://u:p@{netloc}:5432/d?sslmode={mode}")
    assert libpq_ssl_options(params) == {"sslmode": expected}


def test_verify_full_uses_the_system_cas_unless_given_a_root_certificate() -> None:
    full = libpq_ssl_options(parse_dsn("postgresql://u:p@db.internal/d?sslmode=verify-full"))
    assert full == {"sslmode": "verify-full", "sslrootcert": "system"}
    own = libpq_ssl_options(
        parse_dsn(
            "postgresql://u:p@db.internal/d?sslmode=verify-ca&sslrootcert=/etc/pg/ca.pem"
            "&sslcert=/etc/pg/client.pem&sslkey=/etc/pg/client.key&application_name=x"
        )
    )
    assert own == {
        "sslmode": "verify-ca",
        "sslrootcert": "/etc/pg/ca.pem",
        "sslcert": "/etc/pg/client.pem",
        "sslkey": "/etc/pg/client.key",
    }


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT :a + :b_2", "SELECT %(a)s + %(b_2)s"),
        ("SELECT CAST(:x AS int)::text", "SELECT CAST(%(x)s AS int)::text"),
        ("SELECT ':no', \"a:b\", :yes -- :c\n", "SELECT ':no', \"a:b\", %(yes)s -- :c\n"),
        ("SELECT 'it''s :x' || :y /* :z */", "SELECT 'it''s :x' || %(y)s /* :z */"),
        ("SELECT :p LIKE 'a%' AND 5 % 2 = 1", "SELECT %(p)s LIKE 'a%%' AND 5 %% 2 = 1"),
    ],
)
def test_named_parameters_become_pyformat_outside_literals(sql: str, expected: str) -> None:
    assert pyformat(sql) == expected


def test_parameters_are_bound_not_spliced(fresh_dsn: str) -> None:
    conn = connect(fresh_dsn)
    try:
        hostile = "x'); DROP TABLE nothing; --"
        assert conn.run("SELECT :v, ':v', 1 % 1, :n", v=hostile, n=None) == [
            [hostile, ":v", 0, None]
        ]
        assert conn.run("SELECT '100%'") == [["100%"]]  # no parameters: no formatting
        assert conn.run("CREATE TEMP TABLE t (x int)") == []
        assert conn.run("COPY t FROM STDIN", stream=iter([b"1\n2\n", b"", b"3\n"])) == []
        assert conn.run("SELECT sum(x) FROM t") == [[6]]
    finally:
        conn.close()


def test_an_unknown_sslmode_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match="sslmode must be one of"):
        parse_dsn("postgresql://u:p@127.0.0.1/d?sslmode=sometimes")


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("postgresql://u:s3cret@[::1/d", 'an IPv6 host without its closing "]"'),
        ("postgresql://u:s3cret@h/d?s3cret=1", "a query parameter libpq does not know"),
        ("postgresql://u:%zzs3cret@h/d", "invalid percent-encoded token"),
        # libpq quotes its tokens, and a password holding a quote came out whole (a review).
        ('postgresql://u:a"b%zzs3cret@h/d', "invalid percent-encoded token"),
        ('postgresql://u:Ab"Xy%zzs3cretvalue@h/d', "invalid percent-encoded token"),
        ('postgresql://u:TOP"s3cret@[::1/d', 'an IPv6 host without its closing "]"'),
        ("postgresql://u:s3cret@h/d?options=-c a=b", 'a "=" inside a query parameter\'s value'),
        ("postgresql://u:s3cret@h/d?sslmode", "a query parameter without its value"),
        ("postgresql://u:s3cret@[]/d", 'an empty IPv6 host "[]"'),
    ],
)
def test_a_url_that_does_not_parse_is_a_configuration_error_without_its_text(
    url: str, reason: str
) -> None:
    with pytest.raises(ConfigError, match="is not a valid URL") as caught:
        parse_dsn(url)
    assert reason in str(caught.value)
    assert "s3cret" not in str(caught.value)


def test_a_url_means_what_it_means_to_libpq() -> None:
    """Read by libpq's parser: a hand-written one read the host in the query as no host
    (127.0.0.1:5432, whatever listened there), kept the first of a repeated parameter and
    dropped every parameter it did not know (an audit)."""
    socket_url = "postgresql://u:p%40ss@/sales?host=/cloudsql/proj:eu:db&port=6432"
    params = parse_dsn(socket_url)
    assert (params.host, params.port, params.user, params.password, params.database) == (
        "/cloudsql/proj:eu:db",
        6432,
        "u",
        "p@ss",
        "sales",
    )
    assert params.redacted() == "postgresql://u@/sales?host=/cloudsql/proj:eu:db&port=6432"
    assert libpq_ssl_options(params) == {"sslmode": "disable"}  # a Unix socket is local
    assert parse_dsn("postgresql://u@[::1]:5/d").redacted() == "postgresql://u@[::1]:5/d"
    assert parse_dsn("postgresql://h/d?sslmode=require&sslmode=verify-full").sslmode == (
        "verify-full"
    )
    kept = parse_dsn("postgresql://h/d?options=-c%20search_path%3Dx&target_session_attrs=any")
    assert kept.other == (("options", "-c search_path=x"), ("target_session_attrs", "any"))
    with pytest.raises(ConfigError, match="names several hosts"):
        parse_dsn("postgresql://u:p@h1:5432,h2:5432/d")
    with pytest.raises(ConfigError, match="has an invalid port"):
        parse_dsn("postgresql://u:p@h:70000/d")
    # A "/" in the password: libpq reads host "app", port 12 and database "cret@h/d".
    with pytest.raises(ConfigError, match="has an invalid database name") as refused:
        parse_dsn("postgresql://app:12/cret@h/d")
    assert "cret" not in str(refused.value)
    with pytest.raises(ConfigError, match="connect_timeout must be whole seconds"):
        parse_dsn("postgresql://u:p@h/d?connect_timeout=abc")


def test_a_urls_surrounding_white_space_is_not_its_own() -> None:
    """A Secret made from a file keeps its line end: urlsplit dropped it, libpq keeps it in
    the database's name (every request a 503, the database 'salesmart\n' missing)."""
    assert parse_dsn("postgresql://u:p@h/salesmart\n").database == "salesmart"
    assert parse_dsn("  postgresql://u:p@h/d?host=/sock\r\n").host == "/sock"
    with pytest.raises(ConfigError, match="holds a control character"):
        parse_dsn("postgresql://u:p@h/sales\nmart")
    # ... escaped too (the server's message came back cut at it), but in a password.
    with pytest.raises(ConfigError, match="holds a %-escaped control character"):
        parse_dsn("postgresql://u:p@h/sales%0amart")
    assert parse_dsn("postgresql://u:p%0Aw@h/d").password == "p\nw"
    with pytest.raises(ConfigError, match=r"or postgres:// \(a key=value connection string"):
        parse_dsn("host=h dbname=d")


def test_hostaddr_is_where_the_bytes_go() -> None:
    """libpq connects to hostaddr; with no host the default 127.0.0.1 made `prefer` plain
    TCP to a remote server, and the logs named 127.0.0.1 (a review)."""
    remote = parse_dsn("postgresql://u:p@/d?hostaddr=10.0.0.5")
    assert remote.host == "10.0.0.5"
    assert libpq_ssl_options(remote) == {"sslmode": "prefer"}
    named = parse_dsn("postgresql://u:p@db.internal/d?hostaddr=127.0.0.1")
    assert libpq_ssl_options(named) == {"sslmode": "disable"}  # the bytes stay here
    assert named.redacted() == "postgresql://u@db.internal:5432/d (hostaddr 127.0.0.1)"
    assert remote.redacted() == "postgresql://u@10.0.0.5:5432/d"


def test_the_urls_parameters_do_not_replace_what_the_pool_and_the_rows_need(
    fresh_dsn: str,
) -> None:
    """The function's name in pg_stat_activity, UTF-8 for the rows (COPY sends the file's
    bytes), and a pool's own connect timeout (README's 7.5 s) stay the callers'."""
    joiner = "&" if "?" in fresh_dsn else "?"
    url = f"{fresh_dsn}{joiner}client_encoding=LATIN1&application_name=other&connect_timeout=30"
    conn = connect(url, application_name="pool-own-name")
    try:
        assert conn.run(
            "SELECT current_setting('client_encoding'), current_setting('application_name')"
        ) == [["UTF8", "pool-own-name"]]
        assert conn.raw.get_dsn_parameters()["connect_timeout"] == "30"  # a command's: the URL's
    finally:
        conn.close()
    pooled = connect(url, application_name="pool-own-name", timeout=3)
    try:
        assert pooled.raw.get_dsn_parameters()["connect_timeout"] == "3"
    finally:
        pooled.close()


def test_a_host_in_the_query_reaches_that_unix_socket_with_the_urls_parameters() -> None:
    with scratch_pg_server("salesmart-pg-socket-") as server:
        sockets = server.data_dir.parent / "sockets"
        sockets.mkdir()
        owner = _server_owner()
        if owner is not None:  # the server runs as another user when the tests run as root
            os.chown(sockets, owner.pw_uid, owner.pw_gid)
        admin = connect(server.dsn)
        admin.run(f"ALTER SYSTEM SET unix_socket_directories = '{sockets}'")
        admin.close()
        server.stop()
        server.start()
        tcp = parse_dsn(server.dsn)
        url = (
            f"postgresql://{tcp.user}:{tcp.password}@/postgres?host={sockets}&port={tcp.port}"
            "&options=-c%20statement_timeout%3D4321&target_session_attrs=read-write"
        )
        conn = connect(url)
        try:
            # No server address: a Unix socket, not 127.0.0.1.
            assert conn.run("SELECT inet_server_addr(), current_setting('statement_timeout')") == [
                [None, "4321ms"]
            ]
        finally:
            conn.close()


def settings_without_options() -> Settings:
    return build_settings({"SALESMART_DATABASE_URL": "postgresql://u:p@h/d"})


def test_dbt_is_given_the_urls_other_parameters_through_libpqs_variables() -> None:
    settings = build_settings(
        {
            "SALESMART_DATABASE_URL": "postgresql://u:p@/d?host=/cloudsql/x&port=6432"
            "&options=-c%20statement_timeout%3D5s&connect_timeout=7&keepalives=1"
            "&sslmode=verify-ca&sslrootcert=/etc/ca.pem",
        }
    )
    env = _postgres_env(settings, {})
    assert {key: env[key] for key in env if key.startswith("PG")} == {
        # dbt's own lock bound first (transform.DBT_LOCK_TIMEOUT_MS), the URL's after it.
        "PGOPTIONS": "-c lock_timeout=2000 -c statement_timeout=5s",
        "PGSSLROOTCERT": "/etc/ca.pem",
    }
    assert _postgres_env(settings_without_options(), {"PGOPTIONS": "-c work_mem=8MB"})[
        "PGOPTIONS"
    ] == ("-c lock_timeout=2000 -c work_mem=8MB")  # the environment's, when the URL has none
    assert (env["SALESMART_PG_HOST"], env["SALESMART_PG_PORT"]) == ("/cloudsql/x", "6432")
    assert (env["SALESMART_PG_SSLMODE"], env["SALESMART_PG_CONNECT_TIMEOUT"]) == ("verify-ca", "7")
    refused = build_settings({"SALESMART_DATABASE_URL": "postgresql://u:p@h/d?sslpassword=k"})
    with pytest.raises(TransformError, match="names sslpassword=, which dbt cannot be given"):
        _postgres_env(refused, {})


def test_require_against_a_server_without_tls_is_unavailable_not_plaintext(
    fresh_dsn: str,
) -> None:
    # The embedded server has no certificate: "require" must refuse, never fall back.
    pool = PgPool(fresh_dsn + "?sslmode=require", max_size=1, connect_timeout=2.0)
    try:
        with pytest.raises(WarehouseUnavailable):
            pool.run("SELECT 1")
        assert pool.opened == 0
    finally:
        pool.close()
    plain = PgPool(fresh_dsn + "?sslmode=prefer", max_size=1)
    try:
        assert plain.run("SELECT 1") == [[1]]
    finally:
        plain.close()


def test_an_error_of_the_copy_blocks_reaches_the_caller_as_it_was(
    fresh_dsn: str, pg_server: EmbeddedPostgres
) -> None:
    class Unreadable(Exception):
        pass

    def blocks() -> Iterator[bytes]:
        yield b"1\n"
        raise Unreadable("the file went away at row CLEAR-ID-7731")

    conn = connect(fresh_dsn)
    try:
        conn.run("CREATE TEMP TABLE t (x int)")
        with pytest.raises(Unreadable, match="the file went away"):
            conn.run("COPY t FROM STDIN", stream=blocks())
        assert conn.run("SELECT count(*) FROM t") == [[0]]  # the COPY was rolled back
    finally:
        conn.close()
    # psycopg2 sends a failed read's text to the server as the COPY's reason, into its log:
    # never the caller's message, which may quote the file.
    log = pg_server.log_file.read_text()
    assert "the client stopped reading its input" in log
    assert "CLEAR-ID-7731" not in log


def test_a_forked_child_never_closes_the_parents_connections(fresh_dsn: str) -> None:
    pool = PgPool(fresh_dsn, max_size=2, application_name="pool-fork")
    try:
        assert pool.run("SELECT 1") == [[1]]
        (parent_backend,) = backend_pids(fresh_dsn, "pool-fork")
        child = os.fork()
        if child == 0:  # the child: its own connection; the parent's are left alone
            status = 1
            try:
                status = 0 if pool.run("SELECT 2") == [[2]] else 1
                pool.close()
                gc.collect()
            finally:
                os._exit(status)
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        # The child's backend leaves in its own time; the parent's must still be there.
        assert eventually(lambda: backend_pids(fresh_dsn, "pool-fork") == [parent_backend], 10)
        assert pool.run("SELECT 3") == [[3]]
        assert pool.opened == 1  # no reconnect: the parent's session survived the child
    finally:
        pool.close()


def test_statements_run_in_one_snapshot_see_one_state(fresh_dsn: str) -> None:
    """A change committed between them (a dbt build swapping a mart) is seen by all of them
    or none: the dashboard showed one build's rows beside the next one's totals."""
    admin = connect(fresh_dsn)
    admin.run("CREATE TABLE snapshot_probe (n integer)")
    admin.run("INSERT INTO snapshot_probe VALUES (1)")
    pool = PgPool(fresh_dsn, max_size=1, application_name="pool-snapshot")

    def commit_during_the_first_statement() -> None:
        time.sleep(0.3)
        writer = connect(fresh_dsn)
        try:
            writer.run("INSERT INTO snapshot_probe VALUES (2)")
        finally:
            writer.close()

    count = "SELECT count(*) FROM snapshot_probe"
    try:
        for together in (True, False):
            writer = threading.Thread(target=commit_during_the_first_statement)
            writer.start()
            first: tuple[str, dict[str, object]] = (f"SELECT ({count}), pg_sleep(0.8)", {})
            if together:
                ([[before, _]], [[after]]) = pool.run_in_one_snapshot(first, (count, {}))
                assert before == after  # one state
            else:  # as two statements did: the second one saw the commit
                [[before, _]] = pool.run(first[0])
                [[after]] = pool.run(count)
                assert after == before + 1
            writer.join()
        # A statement that fails inside rolls the snapshot back: the connection is reusable.
        with pytest.raises(Exception, match="division by zero"):
            pool.run_in_one_snapshot((count, {}), ("SELECT 1 / 0", {}))
        assert pool.run(count) == [[3]]
        assert pool.opened == 1
        # Read only: nothing is written from inside a snapshot.
        with pytest.raises(Exception, match="read-only transaction"):
            pool.run_in_one_snapshot(("INSERT INTO snapshot_probe VALUES (9)", {}))
        assert pool.run(count) == [[3]]
    finally:
        pool.close()
        admin.run("DROP TABLE snapshot_probe")
        admin.close()


def test_a_snapshot_waits_for_a_table_being_swapped_and_sees_the_new_one(
    fresh_dsn: str,
) -> None:
    """As dbt replaces a mart: a snapshot taken before waiting on the swap's lock saw the
    new table empty (the dashboard said "No sales match" during each build)."""
    admin = connect(fresh_dsn)
    admin.run("CREATE TABLE swap_probe AS SELECT generate_series(1, 10) AS n")
    pool = PgPool(fresh_dsn, max_size=2, application_name="pool-swap")
    count: tuple[str, dict[str, object]] = ("SELECT count(*) FROM swap_probe", {})
    try:
        for tables in (("swap_probe",), ()):
            build = connect(fresh_dsn)
            build.run("BEGIN")
            build.run("CREATE TABLE swap_probe__tmp AS SELECT generate_series(1, 20) AS n")
            build.run("ALTER TABLE swap_probe RENAME TO swap_probe__backup")
            build.run("ALTER TABLE swap_probe__tmp RENAME TO swap_probe")
            seen: list[object] = []
            reader = threading.Thread(
                target=lambda: seen.append(pool.run_in_one_snapshot(count, count, tables=tables))  # noqa: B023
            )
            reader.start()
            time.sleep(0.5)  # the reader waits on the swap's lock
            build.run("COMMIT")
            build.run("DROP TABLE swap_probe__backup")
            build.close()
            reader.join()
            if tables:
                assert seen == [[[[20]], [[20]]]]  # the new table, whole
            else:  # the snapshot taken before the wait: the new table's rows unseen
                assert seen == [[[[0]], [[0]]]]
            admin.run("DROP TABLE swap_probe")
            admin.run("CREATE TABLE swap_probe AS SELECT generate_series(1, 10) AS n")
    finally:
        pool.close()
        admin.run("DROP TABLE IF EXISTS swap_probe")
        admin.close()


def test_an_interrupt_inside_a_snapshot_leaves_no_transaction_behind(
    fresh_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from common.pg import PgConnection

    real_run = PgConnection.run

    def interrupted(self: PgConnection, sql: str, *args: object, **params: object) -> object:
        rows = real_run(self, sql, *args, **params)  # type: ignore[arg-type]
        if sql.startswith("BEGIN"):  # fault injected: a signal as BEGIN's answer arrives
            raise KeyboardInterrupt
        return rows

    monkeypatch.setattr(PgConnection, "run", interrupted)
    pool = PgPool(fresh_dsn, max_size=1, application_name="pool-interrupt")
    try:
        with pytest.raises(KeyboardInterrupt):
            pool.run_in_one_snapshot(("SELECT 1", {}))
        assert pool.run("SELECT current_setting('transaction_isolation')") == [["read committed"]]
        assert pool.run("SELECT now() = statement_timestamp()") == [[True]]  # no transaction
        assert pool.opened == 1
    finally:
        pool.close()
