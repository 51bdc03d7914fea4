"""common.process.stopped_by_signals, in this process (the commands' use of it is tested
end to end in test_cli.py and tests/stack/test_up.py)."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from common.process import stopped_by_signals


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_inside_becomes_keyboard_interrupt_and_handlers_come_back(
    signum: signal.Signals,
) -> None:
    before = signal.getsignal(signum)
    with pytest.raises(KeyboardInterrupt), stopped_by_signals():
        os.kill(os.getpid(), signum)
        for _ in range(1000):  # the handler runs between bytecodes: soon
            pass
        pytest.fail("the signal did not interrupt the block")
    assert signal.getsignal(signum) == before


def test_outside_the_main_thread_it_leaves_the_handlers_alone() -> None:
    seen: list[object] = []

    def run() -> None:
        with stopped_by_signals():
            seen.append(signal.getsignal(signal.SIGTERM))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert seen == [signal.getsignal(signal.SIGTERM)]


def test_a_forked_child_stopped_by_a_signal_ends_quietly() -> None:
    """An ingest worker inherits the handler: stopped by its loader's SIGTERM, it exits as by
    default (128 + signal), without a KeyboardInterrupt traceback from where it was."""
    with stopped_by_signals():
        pid = os.fork()
        if pid == 0:  # the child
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                for _ in range(1000):
                    pass
            finally:
                os._exit(99)  # reached only when the handler raised instead of exiting
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 128 + signal.SIGTERM


def test_a_signal_a_library_turns_into_its_own_error_still_stops_the_block(fresh_dsn: str) -> None:
    """The real psycopg2: SIGTERM landing as ``COPY`` calls the file's ``read`` is reported
    by psycopg2 as its own error ("error in .read() call: KeyboardInterrupt"); the command
    must still end as interrupted (exit 130), not as a PostgreSQL error (exit 1)."""
    import psycopg2

    from common.pg import connect

    class SignalledFile:
        def read(self, size: int = -1) -> bytes:
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):  # the handler runs here, inside psycopg2's call
                pass
            return b""

        readline = read

    def raise_interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    conn = connect(fresh_dsn)
    try:
        with conn.raw.cursor() as cursor:
            cursor.execute("CREATE TEMP TABLE copied (line text)")
            # What psycopg2 does with a KeyboardInterrupt raised in the file it reads.
            previous = signal.signal(signal.SIGTERM, raise_interrupt)
            try:
                with pytest.raises(psycopg2.Error, match=r"read\(\) call: KeyboardInterrupt"):
                    cursor.copy_expert("COPY copied FROM STDIN", SignalledFile())
            finally:
                signal.signal(signal.SIGTERM, previous)
            # Inside stopped_by_signals, the block ends as interrupted all the same.
            with pytest.raises(KeyboardInterrupt) as caught, stopped_by_signals():
                cursor.copy_expert("COPY copied FROM STDIN", SignalledFile())
            assert isinstance(caught.value.__cause__, psycopg2.Error)
    finally:
        conn.close()
