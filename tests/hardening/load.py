"""A bounded loopback load generator: N threads, one ``requests.Session`` each, for D seconds.

Each request is one of a weighted list of ``Shot``s; every answer is recorded with its time
(seconds since the start), the shot's name and the status (0 for a client-side error).
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import requests

Send = Callable[[requests.Session], requests.Response]


@dataclass(frozen=True)
class Shot:
    name: str
    send: Send
    weight: int = 1


@dataclass
class Record:
    at: float
    name: str
    status: int
    seconds: float


@dataclass
class Run:
    records: list[Record] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)

    def statuses(self, name: str | None = None) -> Counter[int]:
        return Counter(r.status for r in self.records if name is None or r.name == name)


def run_load(
    shots: list[Shot],
    *,
    seconds: float,
    concurrency: int,
    seed: int = 8,
    on_tick: Callable[[float], float | None] | None = None,
    tick: float = 1.0,
) -> Run:
    """Fire ``shots`` for ``seconds``; ``on_tick(elapsed)`` runs about every ``tick`` seconds
    and may return a new total duration (seconds from the start)."""
    run = Run()
    lock = threading.Lock()
    started = time.monotonic()
    deadline = [started + seconds]
    weighted = [shot for shot in shots for _ in range(shot.weight)]

    def worker(index: int) -> None:
        rng = random.Random(seed * 1000 + index)
        session = requests.Session()
        try:
            while time.monotonic() < deadline[0]:
                shot = rng.choice(weighted)
                sent = time.monotonic()
                try:
                    status = shot.send(session).status_code
                except requests.RequestException as exc:
                    status = 0
                    with lock:
                        run.errors[f"{shot.name}: {type(exc).__name__}"] += 1
                done = time.monotonic()
                with lock:
                    run.records.append(Record(sent - started, shot.name, status, done - sent))
        finally:
            session.close()

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        futures = [pool.submit(worker, n) for n in range(concurrency)]
        while not all(f.done() for f in futures):
            if on_tick is not None:
                longer = on_tick(time.monotonic() - started)
                if longer is not None:
                    deadline[0] = started + longer
            time.sleep(tick)
        for future in futures:
            future.result()
    return run


def slope_per_minute(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) samples, per minute."""
    n = len(samples)
    if n < 2:
        return 0.0
    mean_t = sum(t for t, _ in samples) / n
    mean_v = sum(v for _, v in samples) / n
    var = sum((t - mean_t) ** 2 for t, _ in samples)
    if var == 0:
        return 0.0
    cov = sum((t - mean_t) * (v - mean_v) for t, v in samples)
    return cov / var * 60
