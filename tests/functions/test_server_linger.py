"""``common.server.Lingerer``: closed connections linger on a thread of their own, and each
socket handed over is counted back exactly once, whatever ends its lingering (the worker
counts it as a connection until then: a socket never counted back would hold a place of
its limit for good)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from common import server
from common.server import Lingerer


class Counted:
    def __init__(self) -> None:
        self.closed = 0
        self._lock = threading.Lock()

    def __call__(self) -> None:
        with self._lock:
            self.closed += 1

    def when(self, count: int, within: float) -> float:
        """Seconds until ``count`` sockets were counted back (fails past ``within``)."""
        started = time.monotonic()
        while self.closed < count:
            assert time.monotonic() - started < within, f"{self.closed} of {count} closed"
            time.sleep(0.02)
        return time.monotonic() - started


class QuickLingerer(Lingerer):
    LINGER_SECONDS = 0.5


@pytest.fixture
def pairs() -> Iterator[list[socket.socket]]:
    made: list[socket.socket] = []
    yield made
    for sock in made:
        sock.close()


def pair(made: list[socket.socket]) -> tuple[socket.socket, socket.socket]:
    ours, client = socket.socketpair()
    made += [ours, client]
    return ours, client


def test_a_client_gone_already_is_closed_at_once_and_not_counted(
    pairs: list[socket.socket],
) -> None:
    counted = Counted()
    lingering = QuickLingerer(counted)
    ours, client = pair(pairs)
    client.sendall(b"the rest of a body")
    client.close()
    assert lingering.close(ours) is False
    assert ours.fileno() == -1  # closed
    time.sleep(0.3)
    assert counted.closed == 0


def test_a_silent_client_is_closed_at_the_deadline_and_counted_back_once(
    pairs: list[socket.socket],
) -> None:
    counted = Counted()
    lingering = QuickLingerer(counted)
    ours, client = pair(pairs)
    assert lingering.close(ours) is True
    assert client.recv(10) == b""  # the write side is shut at once
    waited = counted.when(1, within=5)
    assert waited >= QuickLingerer.LINGER_SECONDS - 0.1
    time.sleep(0.6)
    assert counted.closed == 1


def test_a_client_closing_while_it_lingers_is_counted_back_at_once(
    pairs: list[socket.socket],
) -> None:
    counted = Counted()
    lingering = Lingerer(counted)  # a 2 s linger: closing ends it sooner
    ours, client = pair(pairs)
    assert lingering.close(ours) is True
    client.sendall(b"x" * 1000)
    client.close()
    assert counted.when(1, within=1.5) < 1.5


class CountingReads(socket.socket):
    """A socket that counts what is read from it (a spy: reads are unchanged)."""

    read = 0

    def recv(self, size: int, flags: int = 0) -> bytes:
        data = super().recv(size, flags)
        type(self).read += len(data)
        return data


def counting(made: list[socket.socket]) -> tuple[CountingReads, socket.socket]:
    ours, client = pair(made)
    spied = CountingReads(ours.family, ours.type, fileno=ours.detach())
    made.append(spied)
    CountingReads.read = 0
    return spied, client


def test_what_is_read_for_a_client_is_capped_across_the_hand_over(
    pairs: list[socket.socket],
) -> None:
    # 40 KiB before the close and 40 KiB after: the cap (64 KiB) counts both, and ends
    # the lingering before its 2 s deadline (it read 128 KiB in all, the cap twice).
    counted = Counted()
    lingering = Lingerer(counted)
    ours, client = counting(pairs)
    client.sendall(b"x" * 40 * 1024)
    assert lingering.close(ours) is True
    client.sendall(b"y" * 40 * 1024)
    assert counted.when(1, within=1.5) < 1.5
    assert Lingerer.LINGER_BYTES <= CountingReads.read <= Lingerer.LINGER_BYTES + 4096


def test_a_client_that_sent_the_whole_cap_already_is_closed_at_once(
    pairs: list[socket.socket],
) -> None:
    counted = Counted()
    lingering = Lingerer(counted)
    ours, client = counting(pairs)
    client.sendall(b"x" * (Lingerer.LINGER_BYTES + 10_000))
    assert lingering.close(ours) is False  # nothing more would be read for it
    assert ours.fileno() == -1
    assert CountingReads.read <= Lingerer.LINGER_BYTES + 4096
    time.sleep(0.3)
    assert counted.closed == 0


class FaultyOnTheLingerThread(socket.socket):
    """Injected fault (no real socket fails like this on demand): ``recv`` raises on the
    linger thread only."""

    def recv(self, size: int, flags: int = 0) -> bytes:
        if threading.current_thread().name == "salesmart-linger":
            raise RuntimeError("a bug in lingering")
        return super().recv(size, flags)


def test_a_failure_on_one_socket_leaves_the_others_lingering_and_counted(
    pairs: list[socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    failures: list[str] = []
    monkeypatch.setattr(server, "log_failure", lambda message, exc: failures.append(message))
    counted = Counted()
    lingering = QuickLingerer(counted)
    ours, client = pair(pairs)
    faulty = FaultyOnTheLingerThread(ours.family, ours.type, fileno=ours.detach())
    pairs.append(faulty)
    assert lingering.close(faulty) is True
    client.sendall(b"y")  # readable on the linger thread: its recv fails there
    others = [pair(pairs) for _ in range(3)]
    for sock, _ in others:
        assert lingering.close(sock) is True
    counted.when(4, within=3)  # the faulty one dropped, the others at their deadline
    time.sleep(0.6)
    assert counted.closed == 4
    assert 1 <= len(failures) <= 3, failures  # logged, not in a spin


def test_a_failing_count_back_leaves_the_thread_closing_the_others(
    pairs: list[socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Injected fault: the count-back itself raises (at expiry). The thread went on
    before only for reads; a failure at expiry ended it, leaving the rest open."""
    failures: list[str] = []
    monkeypatch.setattr(server, "log_failure", lambda message, exc: failures.append(message))
    calls = Counted()

    def failing_once() -> None:
        calls()
        if calls.closed == 1:
            raise RuntimeError("a bug in counting back")

    lingering = QuickLingerer(failing_once)
    for _ in range(3):
        ours, _client = pair(pairs)
        assert lingering.close(ours) is True
    calls.when(3, within=3)
    assert failures and "1 failed" in failures[0], failures
    ours, _client = pair(pairs)  # the thread still lingers
    assert lingering.close(ours) is True
    calls.when(4, within=3)
