"""The local run's function logs stay bounded: a full one is copied aside and emptied in place
while its function writes on."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

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
    # A shared folder it is pointed at is left as it is: sticky (/tmp), or not salesmart's.
    for name, mode in (("shared", 0o1777), ("elsewhere", 0o755)):
        folder = tmp_path / name
        folder.mkdir()
        folder.chmod(mode)
        ensure_state_dir(dataclasses.replace(settings, state_dir=folder))
        assert folder.stat().st_mode & 0o7777 == mode
