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


def test_a_client_that_keeps_sending_is_cut_off_at_the_byte_cap(
    pairs: list[socket.socket],
) -> None:
    counted = Counted()
    lingering = Lingerer(counted)
    ours, client = pair(pairs)
    sent = 0

    def stream() -> None:
        nonlocal sent
        try:
            while True:
                sent += client.send(b"x" * 4096)
        except OSError:  # reset once it was closed
            pass

    streaming = threading.Thread(target=stream, daemon=True)
    streaming.start()
    time.sleep(0.1)
    assert lingering.close(ours) is True
    counted.when(1, within=1.5)  # well before the 2 s deadline: the cap closed it
    streaming.join(timeout=5)
    assert not streaming.is_alive()
    assert sent < Lingerer.LINGER_BYTES * 2 + 2 * 1024 * 1024  # the pair's buffers, then cut


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
