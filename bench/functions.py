"""Function instances as the container runs them: ``functions-framework`` under gunicorn with
the image's settings (WORKERS=1, THREADS=8) and the image's packages (``.venv-serve``,
installed by ``make bench`` from requirements/serve.txt, the image's lock), one process group
per instance; the real request each function is measured with; cold start and resident
memory."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import subprocess
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import psutil

from common.config import REPO_ROOT
from common.server import serve_arguments
from pipeline.netutil import free_port

HELLO = "hello"
FUNCTIONS = ("token", "trends_pg", "trends_bq", "dashboard")
# The Dockerfile's serving settings (one gunicorn worker, 8 threads): every instance here,
# the floor included, runs with them.
GUNICORN_ENV = {"WORKERS": "1", "THREADS": "8", "CLOUD_RUN_TIMEOUT_SECONDS": "300"}
START_TIMEOUT_SECONDS = 60.0
#: The image's packages and nothing else: the dev environment (.venv) holds test and lint
#: tools that libraries import when present (google-cloud-bigquery imports tqdm: 0.4-0.5 MiB
#: and ~5 ms more per instance than in the image).
SERVING_ENV = REPO_ROOT / ".venv-serve"


class Memory(NamedTuple):
    rss: int
    pss: int


@dataclass(frozen=True)
class Probe:
    """The real request a function is measured with (and the 200 it must answer)."""

    method: str
    path: str
    headers: Mapping[str, str] = field(default_factory=dict)
    body: str = ""


@dataclass(frozen=True)
class Runtime:
    """How every instance, the floor's included, is started: its environment variables and
    the ``salesmart-serve`` of a serving environment."""

    env: Mapping[str, str]
    serving_env: Path = SERVING_ENV

    @property
    def serve(self) -> Path:
        return serve_script(self.serving_env)


def serve_script(serving_env: Path) -> Path:
    return serving_env / "bin" / "salesmart-serve"


def source_of(name: str) -> Path:
    if name == HELLO:
        return REPO_ROOT / "bench" / "hello" / "main.py"
    return REPO_ROOT / "functions" / name / "main.py"


@dataclass
class Instance:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    started: float  # time.monotonic() just before the process was created
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def memory(self) -> Memory:
        """Memory of the instance: the gunicorn master and its workers, summed.

        RSS counts a page the master and a worker share (the app, loaded before the fork) once
        per process; PSS splits it between them, so its sum is what the instance really holds
        (about what a pod's memory cgroup is charged).
        """
        try:
            root = psutil.Process(self.process.pid)
            processes = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return Memory(0, 0)
        rss = pss = 0
        for process in processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                full = process.memory_full_info()
                rss += full.rss
                pss += full.pss
        return Memory(rss, pss)

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def start(name: str, runtime: Runtime, log_dir: Path) -> Instance:
    """Start one instance (returns at once; see ``first_ok``)."""
    port = free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{name}-{port}.log"
    with log.open("wb") as handle:
        started = time.monotonic()
        process = subprocess.Popen(
            [str(runtime.serve), *serve_arguments(name, source_of(name), "127.0.0.1", port)],
            env={**runtime.env, **GUNICORN_ENV, "PYTHONUNBUFFERED": "1"},
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=str(REPO_ROOT),
        )
    return Instance(name, port, process, started, log)


def request(instance: Instance, probe: Probe, timeout: float = 30.0) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", instance.port, timeout=timeout)
    try:
        body = probe.body.encode() if probe.body else None
        connection.request(probe.method, probe.path, body=body, headers=dict(probe.headers))
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def first_ok(instance: Instance, probe: Probe) -> float:
    """Seconds from process start to the first 200 answer to ``probe`` (polled every 5 ms)."""
    deadline = instance.started + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if instance.process.poll() is not None:
            raise RuntimeError(
                f"{instance.name} exited ({instance.process.returncode}); see {instance.log}"
            )
        try:
            status, body = request(instance, probe)
        except (ConnectionError, OSError):
            time.sleep(0.005)
            continue
        if status == 200:
            return time.monotonic() - instance.started
        raise RuntimeError(
            f"{instance.name}: {probe.method} {probe.path} answered {status}: {body[:300]!r}"
        )
    raise RuntimeError(f"{instance.name} gave no 200 within {START_TIMEOUT_SECONDS} s")


@contextlib.contextmanager
def running(name: str, runtime: Runtime, log_dir: Path, probe: Probe) -> Iterator[Instance]:
    """One warm instance: started, answered ``probe`` once, stopped at the end."""
    instance = start(name, runtime, log_dir)
    try:
        first_ok(instance, probe)
        yield instance
    finally:
        instance.stop()


def form(fields: Mapping[str, str]) -> str:
    return urllib.parse.urlencode(fields)
