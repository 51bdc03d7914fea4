"""The kubelet's probes reach a function pod directly, not through Knative's concurrency
limit: with the gunicorn threads the chart gives a pod, ``/healthz`` answers at once while
every request Knative may send it waits on a warehouse that does not answer. (With only as
many threads as requests, the probe queued behind them, timed out, and the kubelet would have
restarted a pod that was only waiting.)

Real parts: the chart rendered by Helm, trends_pg served as the image serves it
(``salesmart-serve``), and a TCP listener standing in for a PostgreSQL server that accepts
connections and never answers (the function's connect timeout is 3 s).
"""

from __future__ import annotations

import concurrent.futures
import socket
import time
from collections.abc import Callable, Iterator

import pytest
import requests

from common.auth import Principal, TokenService
from common.config import build_settings
from pipeline.render_manifests import render_chart
from tests.conftest import TEST_ENV
from tests.deploy.conftest import env_of, knative_services
from tests.functions.conftest import Served


@pytest.fixture
def silent_postgres() -> Iterator[int]:
    """Accepts connections (the kernel does, from the backlog) and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    yield int(server.getsockname()[1])
    server.close()


def pod_env(concurrency: int) -> dict[str, str]:
    """WORKERS and THREADS as the chart renders them for trends_pg at ``concurrency``."""
    trends_pg = {"containerConcurrency": concurrency, "autoscaling": {"target": concurrency}}
    service = knative_services(render_chart({"functions": {"trends_pg": trends_pg}}))
    env = env_of(service["trends_pg"])
    return {"WORKERS": env["WORKERS"], "THREADS": env["THREADS"]}


@pytest.mark.parametrize("concurrency", [1, 2])
def test_health_probe_answers_while_every_allowed_request_waits(
    concurrency: int,
    silent_postgres: int,
    serve: Callable[..., Served],
) -> None:
    dsn = f"postgresql://salesmart:{'unused' * 8}@127.0.0.1:{silent_postgres}/salesmart"
    served = serve("trends_pg", SALESMART_DATABASE_URL=dsn, **pod_env(concurrency))
    settings = build_settings({**TEST_ENV, "SALESMART_DATABASE_URL": dsn})
    token = TokenService(settings).issue(Principal("analyst1", "analyst")).access_token
    headers = {"Authorization": f"Bearer {token}"}

    def trends() -> int:
        answer = requests.get(f"{served.url}/sales/pg-trends", headers=headers, timeout=30)
        return answer.status_code

    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        waiting = [pool.submit(trends) for _ in range(concurrency)]
        time.sleep(0.5)  # every request is in, waiting on the silent server (3 s)
        assert not any(future.done() for future in waiting)
        started = time.monotonic()
        probe = requests.get(f"{served.url}/healthz", timeout=2.5)
        probe_seconds = time.monotonic() - started
        assert all(future.result() == 503 for future in waiting)
    assert probe.status_code == 200
    # Before the requests' 3 s connect timeout ran out: the probe did not queue behind them.
    assert probe_seconds < 1.5, probe_seconds
