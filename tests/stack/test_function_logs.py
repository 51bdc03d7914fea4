"""The local run's function logs stay bounded: a full one is copied aside and emptied in place
while its function writes on."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common.config import ConfigError
from pipeline.stack import FunctionProcesses

# Appends numbered lines to its stdout, as a function writes its JSON lines to the log `up`
# opened for it (append mode), until stopped.
WRITER = """
import sys, time
n = 0
while True:
    n += 1
    sys.stdout.write(f'{{"line": {n}, "pad": "{"x" * 200}"}}\\n')
    sys.stdout.flush()
    time.sleep(0.0005)
"""


def test_a_full_log_is_copied_aside_and_emptied_while_written(tmp_path: Path) -> None:
    functions = FunctionProcesses(["token"], 18999, {}, tmp_path)
    log = tmp_path / "token.log"
    with log.open("ab") as handle:
        writer = subprocess.Popen([sys.executable, "-c", WRITER], stdout=handle)
    functions.processes["token"] = writer
    try:
        limit = 512 * 1024
        deadline = time.monotonic() + 30
        while log.stat().st_size < limit:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        functions.rotate_logs(max_bytes=limit)
        kept = tmp_path / "token.log.1"
        assert kept.stat().st_size >= limit
        assert kept.stat().st_mode & 0o777 == 0o600  # it names accounts, as the log does
        deadline = time.monotonic() + 30
        while log.stat().st_size == 0:  # the writer goes on, into the emptied file
            assert time.monotonic() < deadline
            time.sleep(0.001)
    finally:
        writer.kill()
        writer.wait()
    old_lines = kept.read_bytes().splitlines()
    new_lines = log.read_bytes().splitlines()
    # The writer kept writing at the start of the emptied file: no hole of NUL bytes (as
    # when a file not opened for appending is truncated), only whole lines, in order.
    assert not log.read_bytes().startswith(b"\0")
    numbers = [int(line.split(b",")[0].split(b":")[1]) for line in old_lines + new_lines]
    assert numbers == sorted(numbers) and numbers[0] == 1
    # Under the limit, nothing is touched.
    size = log.stat().st_size
    functions.rotate_logs(max_bytes=limit)
    assert log.stat().st_size == size


def test_the_state_folder_and_the_logs_are_the_owners_only(tmp_path: Path) -> None:
    """Other users of the machine read neither (the log lines name the accounts that log
    in): the folder was 0755 and the logs 0644."""
    import dataclasses

    from common.config import build_settings
    from common.local_run import ensure_state_dir, open_private

    settings = dataclasses.replace(build_settings({}), state_dir=tmp_path / "fresh" / ".salesmart")
    state = ensure_state_dir(settings)
    assert state.stat().st_mode & 0o777 == 0o700
    with open_private(state / "token.log") as log:
        log.write(b"{}\n")
    assert (state / "token.log").stat().st_mode & 0o777 == 0o600
    # One an older release made 0755 is closed to others (their search bit stays); a
    # group's access, set on purpose, is left as it is.
    for mode, closed in ((0o755, 0o751), (0o757, 0o751), (0o2770, 0o2770), (0o700, 0o700)):
        state.chmod(mode)
        assert ensure_state_dir(settings).stat().st_mode & 0o7777 == closed
    # A folder it is pointed at that is not salesmart's is left as it is.
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    folder.chmod(0o755)
    ensure_state_dir(dataclasses.replace(settings, state_dir=folder))
    assert folder.stat().st_mode & 0o7777 == 0o755
    # A shared one (sticky, as /tmp) is refused: anyone could plant keys or links in it.
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    with pytest.raises(ConfigError, match=r"shared folder \(sticky, as /tmp\) cannot be the state"):
        ensure_state_dir(dataclasses.replace(settings, state_dir=shared))
    assert shared.stat().st_mode & 0o7777 == 0o1777 and not any(shared.iterdir())


def test_another_users_state_folder_is_refused_not_trusted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``.salesmart`` another user made (in a shared checkout) handed this one their JWT key
    (tokens they sign were honoured), their endpoints (rows loaded into their server) and
    symlinks written through (a root-owned file chmodded 0600 and appended to)."""
    import dataclasses

    from common.config import build_settings
    from common.local_run import ensure_state_dir, local_secret, running_stack, running_up_keys

    state = tmp_path / ".salesmart"
    state.mkdir(mode=0o700)
    (state / "jwt-secret").write_text("planted-by-another-user-0123456789abcdef\n")
    (state / "endpoints.json").write_text('{"postgres": "postgresql://them@127.0.0.1:1/x"}')
    if os.geteuid() == 0:
        os.chown(state, 65534, 65534)  # nobody's, for real
    else:  # an unprivileged run cannot give a folder away: it is told it is not its own
        monkeypatch.setattr(os, "geteuid", lambda: os.stat(state).st_uid + 1)
    settings = dataclasses.replace(build_settings({}), state_dir=state)
    for use in (
        lambda: ensure_state_dir(settings),
        lambda: local_secret(settings, "jwt-secret"),
    ):
        with pytest.raises(ConfigError, match=r"the state folder belongs to another user \("):
            use()
    # What a live `up` would share there is passed over, not taken (nor a reason to refuse
    # a command given everything in its environment).
    assert running_stack(settings) is None and running_up_keys(settings) == {}


def test_a_log_is_never_written_through_a_symlink(tmp_path: Path) -> None:
    from common.local_run import open_private

    target = tmp_path / "precious"
    target.write_text("precious\n")
    target.chmod(0o644)
    (tmp_path / "trends_pg.log").symlink_to(target)
    with pytest.raises(OSError) as refused:
        open_private(tmp_path / "trends_pg.log")
    assert refused.value.errno == errno.ELOOP
    assert target.read_text() == "precious\n" and target.stat().st_mode & 0o777 == 0o644
