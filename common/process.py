"""Processes that must not outlive the one that started them.

A process started by another (an ingest worker, a function served by ``salesmart up``) is
left running when its starter is killed outright (SIGKILL, the OOM killer): nothing in the
starter runs to stop it. On Linux the kernel can do it instead (``die_with_parent``), or, for
a tool in a virtualenv of its own (dbt, the BigQuery stand-in), a thread in the tool's own
interpreter that watches its parent (``watched_by_parent``). A starter that is asked to
stop (Ctrl-C, SIGTERM) stops what it started itself: ``stopped_by_signals``, and, for a
child that leads a process group of its own, with all the group: ``stop_group``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the functions import this module; only the pipeline starts processes
    import subprocess

_PR_SET_PDEATHSIG = 1
#: The pid a child started through ``watched_by_parent`` watches, set by its starter in the
#: child's environment: a starter that dies before the child's first line is still seen.
WATCHED_PARENT_ENV = "SALESMART_WATCHED_PARENT"

# Run in the child's own interpreter, then the script: a thread that asks the child to end
# once its starter is gone (and kills it after a grace period). Polling getppid() works
# whatever thread of the starter created it (PR_SET_PDEATHSIG fires when that thread ends).
_PARENT_WATCH = """
import os, runpy, signal, sys, threading, time
parent = int(os.environ.pop("SALESMART_WATCHED_PARENT", "") or os.getppid())
def watch():
    while os.getppid() == parent:
        time.sleep(0.5)
    os.kill(os.getpid(), {signum})
    time.sleep({grace})
    os.kill(os.getpid(), signal.SIGKILL)
threading.Thread(target=watch, daemon=True, name="salesmart-parent-watch").start()
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def die_with_parent(parent: int, signum: int = signal.SIGKILL) -> bool:
    """Have the kernel send ``signum`` to this process when ``parent`` dies; exit at once
    when ``parent`` is already gone (it may die before this call). False where ``prctl``
    is unavailable (not Linux): then nothing is arranged."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return False
    if prctl(_PR_SET_PDEATHSIG, int(signum)) != 0:
        return False
    if os.getppid() != parent:
        os._exit(1)
    return True


def watched_by_parent(
    argv: Sequence[str], signum: int = signal.SIGTERM, grace: float = 15.0
) -> list[str]:
    """``argv`` as a command that ends once the process starting it is gone, even killed
    outright: ``signum`` first (SIGINT lets dbt cancel its queries), SIGKILL ``grace``
    seconds later. For a Python script (``#!`` naming its interpreter: a virtualenv's console
    script), run by that interpreter after the watch starts; anything else is returned as
    it is. The starter puts its pid in the child's environment as ``WATCHED_PARENT_ENV``."""
    interpreter = python_of_script(Path(argv[0]))
    if interpreter is None:
        return list(argv)
    return python_watched_by_parent(interpreter, argv, signum, grace)


def python_watched_by_parent(
    interpreter: str, argv: Sequence[str], signum: int = signal.SIGTERM, grace: float = 15.0
) -> list[str]:
    """``watched_by_parent`` for the Python script ``argv[0]``, run by ``interpreter``."""
    watch = _PARENT_WATCH.format(signum=int(signum), grace=float(grace))
    return [interpreter, "-c", watch, *argv]


def python_of_script(path: Path) -> str | None:
    """The Python interpreter a script's ``#!`` line names (a virtualenv's console script);
    None for anything else."""
    try:
        with path.open("rb") as script:
            first = script.readline(512)
    except OSError:
        return None
    interpreter = first[2:].strip().decode("utf-8", "replace") if first.startswith(b"#!") else ""
    if not interpreter or " " in interpreter or "python" not in Path(interpreter).name:
        return None
    return interpreter


class _SignalBlock:
    """The signals' state of one ``stopped_by_signals`` block."""

    def __init__(self) -> None:
        self.owner = os.getpid()
        self.received: list[int] = []  # the first signal: the command is stopping
        self.deferred = False  # inside ``signals_deferred``: recorded, raised at its end
        self.pending = False  # a deferred signal not raised yet
        self.closing = False  # the block's end: recorded, no longer raised
        self.redeliveries: list[threading.Timer] = []
        self.previous_hook = sys.unraisablehook

    def interrupt(self, signum: int, frame: FrameType | None) -> None:
        if os.getpid() != self.owner:
            # A forked child (an ingest worker) inherits this handler; stopped by its
            # loader (SIGTERM) or Ctrl-C, it ends quietly, as by default, not with a
            # KeyboardInterrupt traceback from wherever it happened to be.
            os._exit(128 + signum)
        if self.received:
            # Already stopping: a second Ctrl-C would break off the stopping itself and
            # leave behind what it was stopping (a server, files saying "running").
            return
        self.received.append(signum)
        if self.deferred:
            self.pending = True
        elif not self.closing:
            raise KeyboardInterrupt  # SIGTERM (a process manager, `timeout`) as Ctrl-C

    def swallowed(self, unraisable: Any) -> None:  # sys.UnraisableHookArgs
        if self.received and _raised_by(_SignalBlock.interrupt, unraisable.exc_traceback):
            # Lost in a finalizer before the stop began: raised again from outside it (raised
            # from here, it would land in this hook and be lost too).
            redelivery = threading.Timer(
                SIGNAL_REDELIVERY_SECONDS, os.kill, (self.owner, self.received[0])
            )
            redelivery.daemon = True
            self.redeliveries.append(redelivery)
            redelivery.start()
            # Last, with no call after it: a signal landing before this is a second one
            # (ignored) and the redelivery raises; one landing after it raises.
            del self.received[:]
            return
        self.previous_hook(unraisable)


#: The ``stopped_by_signals`` blocks the main thread is in, innermost last.
_blocks: list[_SignalBlock] = []


@contextlib.contextmanager
def stopped_by_signals() -> Iterator[None]:
    """Ctrl-C, SIGTERM and SIGHUP raise ``KeyboardInterrupt`` wherever the command is
    (loading, dbt, serving), so its ``finally`` blocks stop what it started (an embedded
    PostgreSQL, the BigQuery stand-in, dbt, functions). Only the first does: signals that
    follow are ignored, so the stopping is not broken off half-way. Also when the parent
    started it with SIGINT ignored (a non-interactive shell's background job, a test
    runner's worker): Python then installs no KeyboardInterrupt handler of its own.
    SIGTERM's and SIGHUP's defaults kill at once, without any of that. A SIGHUP ignored
    from the start (``nohup``) stays ignored.

    A library may catch that ``KeyboardInterrupt`` and raise its own error instead (psycopg2
    does, when it lands in the file a ``COPY`` reads: "error in .read() call"); after a
    signal, such an error leaves the block as ``KeyboardInterrupt`` all the same.

    Python swallows an exception raised inside a finalizer: a signal landing in a ``__del__``
    was lost, and the command went on, every later signal ignored as if it were stopping.
    Such a signal is delivered again a moment later (one landing in the last moment of the
    block is dropped: the command has finished). An io object's finalizer swallows even
    that unseen: code that waits on processes and servers defers signals instead
    (``signals_deferred``)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # handlers belong to the main thread (Python raises elsewhere): leave them
        return
    block = _SignalBlock()
    signals = [signal.SIGINT, signal.SIGTERM]
    if signal.getsignal(signal.SIGHUP) != signal.SIG_IGN:  # left ignored under nohup
        signals.append(signal.SIGHUP)  # the terminal closed, the SSH session dropped
    previous = {signum: signal.signal(signum, block.interrupt) for signum in signals}
    sys.unraisablehook = block.swallowed
    _blocks.append(block)
    try:
        yield
    except Exception as exc:
        if block.received:
            raise KeyboardInterrupt from exc
        raise
    finally:
        block.closing = True  # a redelivery arriving now is only recorded
        _blocks.remove(block)
        if sys.unraisablehook == block.swallowed:  # not another's, set meanwhile
            sys.unraisablehook = block.previous_hook
        for redelivery in block.redeliveries:
            redelivery.cancel()
            redelivery.join()
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Inside ``stopped_by_signals``: a signal's ``KeyboardInterrupt`` is raised when this
    block ends, not wherever the signal lands. For code that polls processes and servers
    and sleeps between rounds (``sleep_unless_stopped`` wakes at once): raised anywhere, it
    could land inside ``subprocess.Popen.poll`` between taking its lock and the ``try``
    that gives it back (the process is then never seen to end), or in a finalizer
    (an HTTP response's), which drops it unseen. Not for the stopping itself: a signal
    received before also raises at its end. Outside such a block, nothing changes."""
    block = _current_block()
    if block is None or block.deferred:
        yield
        return
    block.deferred = True
    try:
        yield
    finally:
        block.deferred = False
        block.pending = False
    if block.received:
        # Also one lost before (an io finalizer, a library that caught it): left unraised,
        # the waits would spin, sleeping no more, and every later signal be ignored.
        raise KeyboardInterrupt


def sleep_unless_stopped(seconds: float) -> None:
    """``time.sleep(seconds)``, ended early once a signal has asked the command to stop."""
    end = time.monotonic() + seconds
    while not stop_requested():
        left = end - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left, 0.05))


def stop_requested() -> bool:
    """Whether a signal has asked the command (its ``stopped_by_signals`` block) to stop;
    False outside the main thread, where signals are not handled."""
    block = _current_block()
    return block is not None and bool(block.received)


def _current_block() -> _SignalBlock | None:
    if not _blocks or threading.current_thread() is not threading.main_thread():
        return None
    return _blocks[-1]


#: How long after a signal lost in a finalizer it is delivered again: long enough for the
#: hook that saw it lost to have returned.
SIGNAL_REDELIVERY_SECONDS = 0.01


def _raised_by(function: Any, traceback: TracebackType | None) -> bool:
    """Whether ``traceback`` ends in ``function``: the exception was raised there."""
    last = traceback
    while last is not None and last.tb_next is not None:
        last = last.tb_next
    return last is not None and last.tb_frame.f_code is function.__code__


def stop_group(
    process: subprocess.Popen[Any], timeout: float, signum: int = signal.SIGTERM
) -> None:
    """Stop ``process``, which leads a process group of its own, and every process in that
    group: ``signum`` (with SIGCONT, so a stopped one acts on it), SIGKILL to what still
    runs after ``timeout``. Returns once none of the group runs. The group matters, not
    just the leader: a program's own children outlive it and go on working (``initdb``'s
    ``postgres --single`` goes on writing into the folder the next start must clear).
    Idempotent: a leader that has already ended is left alone."""
    if process.poll() is not None:
        return
    group = process.pid  # the leader of its own group: the group's id is its pid
    deadline = time.monotonic() + timeout
    _signal_group(group, signum, signal.SIGCONT)
    while not _group_ended(process, group) and time.monotonic() < deadline:
        time.sleep(0.02)
    if not _group_ended(process, group):
        _signal_group(group, signal.SIGKILL)
        end = time.monotonic() + 5
        while not _group_ended(process, group) and time.monotonic() < end:
            time.sleep(0.02)


def _group_ended(process: subprocess.Popen[Any], group: int) -> bool:
    """Whether none of ``group`` runs and its leader ``process`` has ended. Its Popen may
    not see the end when its lock was left taken (a KeyboardInterrupt inside ``poll()``):
    on Linux /proc then says, once every thread of the leader has ended (/proc shows the
    main one's state, 'Z' while the others still run)."""
    # The leader first: the group's scan reads every process's /proc entry.
    if process.poll() is None:
        tasks = list(Path(f"/proc/{process.pid}/task").glob("*/stat"))
        if not tasks or any(_runs(stat) for stat in tasks):
            return False
    return not _group_runs(group)


def _runs(stat: Path) -> bool:
    """Whether the process or thread whose /proc ``stat`` this is runs (not ended, not a
    zombie); False once it is gone."""
    fields = _stat_fields(stat)
    return bool(fields) and fields[0] not in ("Z", "X")


def _stat_fields(stat: Path) -> list[str]:
    """A /proc ``stat`` file's fields after the command (state, ppid, pgrp, ...); none once
    the process is gone. The command, "(...)", may hold spaces and ")"."""
    try:
        return stat.read_text().rpartition(")")[2].split()
    except OSError:
        return []


def _signal_group(group: int, *signums: int) -> None:
    for signum in signums:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signum)


def _group_runs(group: int) -> bool:
    """Whether a process of ``group`` still runs. Zombies do not count: they have ended and
    only wait to be collected. Read from Linux's /proc; elsewhere none is seen."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        fields = _stat_fields(stat)  # none: ended meanwhile
        if len(fields) > 2 and int(fields[2]) == group and fields[0] not in ("Z", "X"):
            return True
    return False
