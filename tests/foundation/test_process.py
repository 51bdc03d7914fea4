"""common.process: stopped_by_signals in this process (the commands' use of it is tested
end to end in test_cli.py and tests/stack/test_up.py), and stop_group on real processes."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest

from common.process import (
    signals_deferred,
    sleep_unless_stopped,
    stop_group,
    stop_requested,
    stopped_by_signals,
)
from tests.conftest import eventually


@pytest.mark.parametrize(
    "signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda signum: signum.name
)
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


def test_signals_after_the_first_do_not_break_off_the_stopping() -> None:
    """A second Ctrl-C (or a SIGTERM after it) while the ``finally`` blocks stop what the
    command started is ignored: it used to interrupt the stopping and leave a server
    running."""
    stopped = False
    with pytest.raises(KeyboardInterrupt), stopped_by_signals():
        try:
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):
                pass
            pytest.fail("the signal did not interrupt the block")
        finally:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):  # where the handler would raise again
                pass
            stopped = True
    assert stopped


class SignalledWhileFinalized:
    """Sends ``signum`` to this process from its ``__del__``: the handler runs there, inside
    a finalizer, whose exceptions Python swallows."""

    def __init__(self, signum: int) -> None:
        self.signum = signum

    def __del__(self) -> None:
        os.kill(os.getpid(), self.signum)
        for _ in range(1000):  # the handler runs here, between bytecodes
            pass


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_a_signal_that_lands_in_a_finalizer_still_stops_the_block(signum: int) -> None:
    """It was lost (Python swallows a finalizer's exception) and every later signal was
    ignored as if the stop ran: a `serve` sent SIGTERM went on serving."""
    previous_hook = sys.unraisablehook
    with pytest.raises(KeyboardInterrupt), stopped_by_signals():
        SignalledWhileFinalized(signum)  # dropped at once
        for _ in range(200):
            time.sleep(0.01)
        pytest.fail("the signal was lost in the finalizer")
    assert sys.unraisablehook is previous_hook


def test_a_finalizers_other_errors_reach_the_hook_as_before() -> None:
    seen: list[type[BaseException] | None] = []

    class FailsWhileFinalized:
        def __del__(self) -> None:
            raise ValueError("from a finalizer")

    previous_hook = sys.unraisablehook
    sys.unraisablehook = lambda unraisable: seen.append(unraisable.exc_type)
    try:
        with stopped_by_signals():
            FailsWhileFinalized()
    finally:
        sys.unraisablehook = previous_hook
    assert seen == [ValueError]


def test_a_signal_lost_in_the_blocks_last_moment_is_not_delivered_after_it() -> None:
    """Its redelivery is cancelled with the block: raised after it, SIGINT would come out
    of the command's own error handling as a traceback (SIGTERM would kill it)."""
    with stopped_by_signals():
        SignalledWhileFinalized(signal.SIGINT)  # lost; redelivery due 10 ms later
    for _ in range(10):
        time.sleep(0.01)  # where a late redelivery would raise


class SignalledWhileClosed(io.RawIOBase):
    """Sends ``signum`` from the ``close`` its finalizer calls: an io object's finalizer
    drops an exception raised there without even telling ``sys.unraisablehook``."""

    def __init__(self, signum: int) -> None:
        self.signum = signum

    def close(self) -> None:
        if not self.closed:
            os.kill(os.getpid(), self.signum)
            for _ in range(1000):
                pass
        super().close()


def test_a_deferred_signal_is_raised_where_the_deferring_block_ends() -> None:
    """Even one that lands in an io object's finalizer, which drops it unseen elsewhere."""
    reached_the_end = False
    with pytest.raises(KeyboardInterrupt), stopped_by_signals():
        with signals_deferred():
            SignalledWhileClosed(signal.SIGTERM)  # dropped unclosed: closed by its finalizer
            assert stop_requested()
            started = time.monotonic()
            sleep_unless_stopped(5)  # wakes at once: the command is to stop
            assert time.monotonic() - started < 1
            reached_the_end = True
        pytest.fail("the deferred signal was not raised")
    assert reached_the_end


def test_a_signal_lost_before_a_deferral_is_raised_where_it_ends() -> None:
    """Lost unseen (here in an io finalizer, outside any deferral), it used to leave the
    waits spinning (no sleep: the command is stopping) and every later signal ignored."""
    with pytest.raises(KeyboardInterrupt), stopped_by_signals():
        SignalledWhileClosed(signal.SIGTERM)  # lost: nothing raised
        assert stop_requested()
        with signals_deferred():
            sleep_unless_stopped(5)
        pytest.fail("the lost signal was not raised where the deferral ended")


def test_outside_a_block_deferring_and_sleeping_change_nothing() -> None:
    with signals_deferred():
        assert not stop_requested()
        started = time.monotonic()
        sleep_unless_stopped(0.2)
    assert time.monotonic() - started >= 0.2


def test_a_sighup_ignored_from_the_start_stays_ignored() -> None:
    """Under ``nohup`` a closed terminal must not stop the command."""
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with stopped_by_signals():
            assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGHUP)
            for _ in range(1000):
                pass
    finally:
        signal.signal(signal.SIGHUP, previous)


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


def _ended(process: psutil.Process) -> bool:
    try:  # an orphan's zombie waits for whoever adopted it; it has ended all the same
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_stop_group_stops_a_process_whose_popen_lock_was_left_taken() -> None:
    """A KeyboardInterrupt between ``Popen.poll`` taking its lock and the ``try`` that gives
    it back leaves the lock taken: the Popen never sees its process end. The fault is
    injected by taking the lock here (no signal lands there on demand). stop_group used to
    raise TimeoutExpired, leaving the other functions of a `serve` unstopped."""
    leader = subprocess.Popen(["sleep", "600"], process_group=0)
    leader._waitpid_lock.acquire()  # type: ignore[attr-defined]  # the injected fault
    try:
        started = time.monotonic()
        stop_group(leader, timeout=30)
        # Ended by the SIGTERM at once, not after the grace and a SIGKILL.
        assert time.monotonic() - started < 10
        assert not psutil.pid_exists(leader.pid) or psutil.Process(leader.pid).status() == (
            psutil.STATUS_ZOMBIE
        )
    finally:
        leader._waitpid_lock.release()  # type: ignore[attr-defined]
        leader.kill()
        leader.wait()


def test_stop_group_stops_the_leader_and_what_it_started() -> None:
    """The leader's children go too: one that ignores SIGTERM (killed after the grace) and
    one that is stopped (SIGSTOP; woken by the SIGCONT that follows SIGTERM). Signalling
    only the leader, they would be left running. Both ignore SIGHUP: the kernel sends it
    (and SIGCONT) to a group that its leader's end leaves with a stopped member."""
    script = "(trap '' HUP; exec sleep 600) & (trap '' HUP TERM; exec sleep 601) & wait"
    leader = subprocess.Popen(["sh", "-c", script], process_group=0)
    try:
        assert eventually(lambda: len(psutil.Process(leader.pid).children()) == 2, seconds=10)
        started = psutil.Process(leader.pid).children()
        stopped = next(child for child in started if child.cmdline() == ["sleep", "600"])
        stopped.suspend()
        stop_group(leader, timeout=1)
        assert leader.poll() is not None
        assert [child.cmdline() for child in started if not _ended(child)] == []
        stop_group(leader, timeout=1)  # idempotent
    finally:
        if leader.poll() is None:
            os.killpg(leader.pid, signal.SIGKILL)
