"""The embedded server: loopback TCP only, password auth, restart keeps data."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from common.config import build_settings
from common.pg import connect
from common.process import stopped_by_signals
from pipeline.migrate import migrate_database
from pipeline.postgres_embedded import (
    SERVER_USER,
    EmbeddedPostgres,
    EmbeddedPostgresError,
    _is_zombie,
    open_embedded,
)
from pipeline.runtime import postgres_dsn
from tests.conftest import scratch_pg_server


def test_password_is_required(pg_server: EmbeddedPostgres) -> None:
    wrong = pg_server.dsn.replace(pg_server.password, "not-the-password")
    with pytest.raises(Exception, match="password authentication failed"):
        connect(wrong)


def test_listens_on_loopback_tcp_only(pg_server: EmbeddedPostgres) -> None:
    conn = connect(pg_server.dsn)
    try:
        settings = dict(
            conn.run(
                "SELECT name, setting FROM pg_settings WHERE name IN"
                " ('listen_addresses', 'unix_socket_directories',"
                " 'password_encryption')"
            )
        )
    finally:
        conn.close()
    assert settings == {
        "listen_addresses": "127.0.0.1",
        "unix_socket_directories": "",
        "password_encryption": "scram-sha-256",
    }


def test_stop_start_keeps_data_and_port() -> None:
    root = Path(tempfile.mkdtemp(prefix="salesmart-pg-"))
    root.chmod(0o755)
    try:
        server = open_embedded(root / "pg", fsync=False)
        server.start()
        conn = connect(server.dsn)
        conn.run("CREATE TABLE kept (x int)")
        conn.run("INSERT INTO kept VALUES (42)")
        conn.close()
        port = server.port
        server.stop()
        assert not server.is_running()
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0
        again = open_embedded(root / "pg", fsync=False)
        assert again.port == port and again.password == server.password
        again.start()
        conn = connect(again.dsn)
        assert conn.run("SELECT x FROM kept") == [[42]]
        conn.close()
        again.stop()
        assert oct((root / "pg" / "password").stat().st_mode)[-3:] == "600"
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_symlinks_planted_in_the_clusters_folder_are_not_written_through() -> None:
    """As root, the cluster's folder is the server user's, who may replace files in it with
    symlinks (the database superuser runs programs as that user: COPY ... TO PROGRAM). Root
    then wrote, chmod-ed and chown-ed through them: a root-owned file truncated and given to
    the server's user. Now what is in the way is replaced, never followed."""
    root = Path(tempfile.mkdtemp(prefix="salesmart-pg-"))
    root.chmod(0o755)
    victims = {name: root / f"victim-{name}" for name in (".initpw", "port", "conf")}
    try:
        server = open_embedded(root / "pg", fsync=False)
        server.start()
        server.stop()
        for victim in victims.values():
            victim.write_text("root's own\n")
            victim.chmod(0o644)
        folder = root / "pg"
        owner = folder.stat()  # the server's user when run as root, else us
        (folder / "password").unlink()  # the next start initialises the cluster again
        for name, target in ((".initpw", victims[".initpw"]), ("port", victims["port"])):
            (folder / name).unlink(missing_ok=True)
            (folder / name).symlink_to(target)
            os.lchown(folder / name, owner.st_uid, owner.st_gid)
        again = open_embedded(root / "pg", fsync=False)
        again.start()
        conf = again.data_dir / "salesmart.conf"
        conf.unlink()
        conf.symlink_to(victims["conf"])
        again.stop()
        again.port = 0
        again._write_settings()  # as a start on a taken port does
        assert not conf.is_symlink() and "listen_addresses" in conf.read_text()
        for victim in victims.values():
            assert victim.read_text() == "root's own\n"
            assert (victim.stat().st_mode & 0o777, victim.stat().st_uid) == (0o644, os.getuid())
        assert oct((folder / "password").stat().st_mode)[-3:] == "600"
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_a_killed_server_restarts_on_its_port_or_says_why_not() -> None:
    # `up` restarts a server killed under it: same port (the functions' DSNs stay valid),
    # even while a backend of the dead one still holds its shared memory; a port taken
    # meanwhile is refused by name, never a move to another port.
    with scratch_pg_server("salesmart-pg-") as server:
        port = server.port
        survivor = connect(server.dsn)  # its backend outlives the postmaster for a moment
        survivor.run("SET synchronous_commit = on")  # a test server may defer it
        survivor.run("CREATE TABLE kept (x int)")
        survivor.run("INSERT INTO kept VALUES (7)")
        _kill_postmaster(server)
        server.restart(timeout=30)
        assert server.is_running() and server.port == port
        conn = connect(server.dsn)
        assert conn.run("SELECT x FROM kept") == [[7]]
        conn.close()
        survivor.close()

        _kill_postmaster(server)
        _wait_for(lambda: _port_free(port), 10)
        with socket.socket() as taker:
            # As servers bind: the closed connections' TIME_WAIT must not stop it.
            taker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            taker.bind(("127.0.0.1", port))
            taker.listen()
            with pytest.raises(EmbeddedPostgresError, match=f"port {port} is taken"):
                server.restart(timeout=5)
        assert server.port == port and not server.is_running()


def test_a_pid_file_naming_a_zombie_does_not_block_the_start() -> None:
    # A killed server is a zombie until init reaps it (~2 s seen): PostgreSQL, which takes
    # any pid that answers kill(0) for a live server, would refuse to start meanwhile.
    # The zombie: exits, and is not reaped until wait(); the server's user's, as a killed
    # server is (PostgreSQL takes a pid it may not signal for a dead one).
    as_server = {"user": SERVER_USER} if os.geteuid() == 0 else {}
    zombie = subprocess.Popen(["true"], **as_server)  # type: ignore[call-overload]
    try:
        _wait_for(lambda: _is_zombie(zombie.pid), 10)
        with scratch_pg_server("salesmart-pg-") as server:
            lines = (server.data_dir / "postmaster.pid").read_text().splitlines()
            server.stop()
            (server.data_dir / "postmaster.pid").write_text(
                "\n".join([str(zombie.pid), *lines[1:]])
            )
            assert not server.is_running()
            server.start()
            assert server.is_running()
            conn = connect(server.dsn)
            assert conn.run("SELECT 1") == [[1]]
            conn.close()
    finally:
        zombie.wait()
    assert not _is_zombie(zombie.pid)  # reaped: gone


def _kill_postmaster(server: EmbeddedPostgres) -> None:
    postmaster = int((server.data_dir / "postmaster.pid").read_text().splitlines()[0])
    os.kill(postmaster, signal.SIGKILL)
    _wait_for(lambda: not server.is_running(), 10)


def _wait_for(condition: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def test_create_database_migrates_replaces_and_refuses_odd_names(
    pg_server: EmbeddedPostgres,
) -> None:
    dsn = pg_server.create_database("t_created_once")
    conn = connect(dsn)
    try:
        conn.run("INSERT INTO raw.loads (source_file, file_sha256) VALUES ('a.csv', 'x')")
    finally:
        conn.close()
    # replace: the same name again, empty (migrated, nothing loaded)
    again = pg_server.create_database("t_created_once", replace=True)
    conn = connect(again)
    try:
        assert conn.run("SELECT count(*) FROM raw.loads") == [[0]]
    finally:
        conn.close()
    bare = pg_server.create_database("t_not_migrated", migrated=False)
    conn = connect(bare)
    try:
        assert conn.run("SELECT to_regclass('raw.loads') IS NULL") == [[True]]
    finally:
        conn.close()
    for odd in ('x"; DROP DATABASE salesmart; --', "Upper", "", "a" * 64):
        with pytest.raises(ValueError, match="plain identifiers"):
            pg_server.create_database(odd)


def test_an_interrupted_first_start_leaves_nothing_in_the_way() -> None:
    """What an interrupted ``initdb`` leaves (a half-built folder, or, from older versions, a
    data folder whose password was never saved) is rebuilt by the next start, not a failure
    of every later command."""
    root = Path(tempfile.mkdtemp(prefix="salesmart-pg-"))
    root.chmod(0o755)
    try:
        pg = root / "pg"
        (pg / "data.init").mkdir(parents=True)  # interrupted now: the folder being built
        (pg / "data.init" / "PG_VERSION").write_text("18\n")
        (pg / "data").mkdir()  # interrupted before: initdb's output, no saved password
        (pg / "data" / "PG_VERSION").write_text("18\n")
        server = open_embedded(pg, fsync=False)
        assert not server.initialized
        server.start()
        try:
            conn = connect(server.dsn)
            assert conn.run("SELECT 1") == [[1]]
            conn.close()
            assert not (pg / "data.init").exists()
            assert open_embedded(pg, fsync=False).password == server.password
        finally:
            server.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


class _HoldAndInterrupt(threading.Thread):
    """Watches this process's children; the first that ``matches`` is held (SIGSTOP) and
    this process gets SIGTERM, so that the signal lands while the child is still there."""

    def __init__(self, matches: Callable[[psutil.Process], bool]) -> None:
        super().__init__(daemon=True)
        self.matches = matches
        self.held: list[psutil.Process] = []

    def run(self) -> None:
        me = os.getpid()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for child in psutil.Process(me).children(recursive=True):
                try:
                    if self.matches(child):
                        child.suspend()
                        self.held.append(child)
                        os.kill(me, signal.SIGTERM)
                        return
                except psutil.Error:
                    continue  # ended meanwhile
            time.sleep(0.002)


def test_an_interrupted_initdb_is_stopped_with_the_server_it_runs() -> None:
    """SIGTERM during the first start stops initdb and the single-user ``postgres`` it runs
    (``--boot``, then ``--single``). That child had outlived the SIGKILLed initdb, writing on
    into the folder the next start clears, whose initdb then failed ("directory not empty").
    Here the child is held (SIGSTOP) so that it cannot finish on its own first."""
    root = Path(tempfile.mkdtemp(prefix="salesmart-pg-"))
    root.chmod(0o755)
    watcher = _HoldAndInterrupt(lambda child: bool({"--boot", "--single"} & set(child.cmdline())))
    try:
        server = open_embedded(root / "pg", fsync=False)
        with pytest.raises(KeyboardInterrupt), stopped_by_signals():
            watcher.start()
            server.init()
            pytest.fail("initdb finished before its server could be held")
        watcher.join()
        try:
            still_running = watcher.held[0].status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            still_running = False
        assert not still_running, watcher.held[0]
        again = open_embedded(root / "pg", fsync=False)
        again.start()
        try:
            conn = connect(again.dsn)
            assert conn.run("SELECT 1") == [[1]]
            conn.close()
            assert [p.name for p in (root / "pg").glob("data.init*")] == []
        finally:
            again.stop()
    finally:
        for child in watcher.held:  # the test's own doing, should the stop not have happened
            if child.is_running():
                child.kill()
        shutil.rmtree(root, ignore_errors=True)


def test_an_interrupted_start_stops_the_server_it_launched() -> None:
    """SIGTERM while ``pg_ctl start`` waits for the server: the server, which pg_ctl runs in
    a session of its own, is stopped too. It had run on, holding the port and the data
    folder, after the command said "interrupted". pg_ctl is held (SIGSTOP) once the server
    has started, so that the signal lands while it waits."""
    root = Path(tempfile.mkdtemp(prefix="salesmart-pg-"))
    root.chmod(0o755)
    server = open_embedded(root / "pg", fsync=False)
    server.init()
    pid_file = server.data_dir / "postmaster.pid"
    watcher = _HoldAndInterrupt(lambda child: "pg_ctl" in child.name() and pid_file.exists())
    try:
        with pytest.raises(KeyboardInterrupt), stopped_by_signals():
            watcher.start()
            server.start()
            pytest.fail("pg_ctl finished before it could be held")
        watcher.join()
        assert not server.is_running()
        assert not pid_file.exists()
    finally:
        if server.is_running():  # the test's own doing, should the stop not have happened
            server.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


def test_the_server_stops_when_its_last_user_leaves() -> None:
    """Two commands use the embedded server, the first having started it. When the first
    ends, the second goes on using it: it used to be stopped under the second (also under
    an ``up`` that had come to use it). When the second ends, it is stopped."""
    root = Path(tempfile.mkdtemp(prefix="salesmart-pg-"))
    root.chmod(0o755)
    environ = {k: v for k, v in os.environ.items() if k != "SALESMART_DATABASE_URL"}
    settings = build_settings({**environ, "SALESMART_STATE_DIR": str(root / "state")})
    first, second = postgres_dsn(settings), postgres_dsn(settings)
    try:
        dsn = first.__enter__()
        assert second.__enter__() == dsn
        first.__exit__(None, None, None)
        conn = connect(dsn)
        assert conn.run("SELECT 1") == [[1]]
        conn.close()
        second.__exit__(None, None, None)
        assert not open_embedded(root / "state" / "postgres").is_running()
    finally:
        server = open_embedded(root / "state" / "postgres")
        if server.is_running():
            server.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


def test_a_command_given_ups_server_keeps_it_until_it_ends() -> None:
    """A command beside ``up`` is given up's server by its endpoints.json (as its
    SALESMART_DATABASE_URL): it counts among the server's users too, so ``up`` stopping
    meanwhile leaves the server to it, and the command, the last to end, stops it. Before,
    ``up`` stopped it under a running load or dbt, and under a ``serve`` for good."""
    root = Path(tempfile.mkdtemp(prefix="salesmart-pg-"))
    root.chmod(0o755)
    up = open_embedded(root / "state" / "postgres")
    try:
        up.join()  # as `up` does
        migrate_database(up.dsn)  # as `up` does: commands refuse a database never migrated
        environ = {k: v for k, v in os.environ.items() if k != "SALESMART_DATABASE_URL"}
        settings = build_settings(
            {
                **environ,
                "SALESMART_STATE_DIR": str(root / "state"),
                "SALESMART_DATABASE_URL": up.dsn,
            }
        )
        with postgres_dsn(settings) as dsn:
            assert dsn == up.dsn
            up.leave()  # `up` stops meanwhile
            conn = connect(dsn)
            assert conn.run("SELECT 1") == [[1]]
            conn.close()
        assert not up.is_running()  # the command, its last user, stopped it
        # Another database (not this folder's server) is used as given, nothing joined.
        other = up.dsn.replace("@127.0.0.1:", "@127.0.0.2:")
        elsewhere = build_settings(
            {**environ, "SALESMART_DATABASE_URL": other, "SALESMART_STATE_DIR": str(root / "state")}
        )
        with postgres_dsn(elsewhere) as given:
            assert given == other and not up.is_running()
    finally:
        up.leave()
        if up.is_running():
            up.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


def _join_together(state: str, barrier: Any, results: Any) -> None:
    """One command of several started at the same moment: join, query, hold, leave."""
    environ = {k: v for k, v in os.environ.items() if k != "SALESMART_DATABASE_URL"}
    settings = build_settings({**environ, "SALESMART_STATE_DIR": state})
    barrier.wait()
    try:
        with postgres_dsn(settings) as dsn:
            conn = connect(dsn)
            conn.run("SELECT 1")
            time.sleep(2)  # the others are inside too
            conn.run("SELECT 1")
            conn.close()
        results.put("ok")
    except BaseException as exc:  # reported to the test, which fails with it
        results.put(f"{type(exc).__name__}: {exc}")


@pytest.mark.parametrize("first_time", [True, False])
def test_commands_starting_together_share_one_server(first_time: bool) -> None:
    """Three commands join at the same moment, in a fresh folder (each used to build its
    own cluster: the folder was left broken for good) and with the server built but
    stopped (each ran pg_ctl, and the loser's clean-up stopped the winner's server)."""
    import multiprocessing

    root = Path(tempfile.mkdtemp(prefix="salesmart-pg-"))
    root.chmod(0o755)
    server_root = root / "state" / "postgres"
    try:
        if not first_time:
            built = open_embedded(server_root)
            built.start()
            built.stop()
        context = multiprocessing.get_context("spawn")
        barrier, results = context.Barrier(3), context.Queue()
        workers = [
            context.Process(target=_join_together, args=(str(root / "state"), barrier, results))
            for _ in range(3)
        ]
        for worker in workers:
            worker.start()
        outcomes = [results.get(timeout=120) for _ in workers]
        for worker in workers:
            worker.join(30)
        assert outcomes == ["ok"] * 3, outcomes
        server = open_embedded(server_root)
        assert not server.is_running()  # the last to leave stopped it
        assert sorted(p.name for p in server_root.iterdir() if p.name.startswith("data")) == [
            "data"
        ]
        server.start()  # and the folder is whole: its saved port and password work
        conn = connect(server.dsn)
        assert conn.run("SELECT 1") == [[1]]
        conn.close()
    finally:
        server = open_embedded(server_root)
        if server.is_running():
            server.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


def test_a_failing_program_is_reported_by_its_error_not_its_last_line(tmp_path: Path) -> None:
    """initdb ends on a hint or on removing its folder; the line that says why comes first.
    Before, an initdb that failed was reported as "failed to remove data directory"."""
    root = tmp_path / "pg"
    root.mkdir()
    root.chmod(0o755)
    tmp_path.chmod(0o755)
    taken = root / "taken"
    taken.mkdir()
    (taken / "something").write_text("x")
    server = open_embedded(root, fsync=False)
    server._chown_root()
    with pytest.raises(EmbeddedPostgresError) as caught:
        server._run(["initdb", "-D", str(taken), "--username", "x"])
    message = str(caught.value)
    assert message.startswith("initdb failed: initdb: error: directory "), message
    assert "exists but is not empty" in message


def test_a_given_database_is_used_when_the_state_folder_cannot_be_entered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A command given SALESMART_DATABASE_URL uses it even when the state folder is closed to
    its user (before: "<state>/postgres: Permission denied", exit 1). Faked: root reads
    every folder, so the permission error is injected (a mock, for a fault only)."""
    state = tmp_path / "state"
    (state / "postgres").mkdir(parents=True)
    real_is_dir = Path.is_dir

    def closed(self: Path) -> bool:
        if self == (state / "postgres").resolve():
            raise PermissionError(13, "Permission denied", str(self))
        return real_is_dir(self)

    monkeypatch.setattr(Path, "is_dir", closed)
    given = "postgresql://someone:secret@db.example:5432/sales"
    environ = {k: v for k, v in os.environ.items() if k != "SALESMART_DATABASE_URL"}
    settings = build_settings(
        {**environ, "SALESMART_STATE_DIR": str(state), "SALESMART_DATABASE_URL": given}
    )
    with postgres_dsn(settings) as dsn:
        assert dsn == given


@pytest.mark.parametrize("char", ["$", "`", '"', "\\$"])
def test_a_folder_a_shell_would_read_is_refused_in_words(tmp_path: Path, char: str) -> None:
    """pg_ctl starts the server through a shell: `$HOME` in a folder's name was expanded, and
    the start failed naming a server.log that was never written (an audit)."""
    root = tmp_path / f"state{char}HOME"
    root.mkdir()
    with pytest.raises(EmbeddedPostgresError, match=re.escape(f"shell, which reads its '{char}'")):
        EmbeddedPostgres(root=root).init()
    assert not (root / "data").exists()
