"""The chart runs every container with a read-only root filesystem (no writable /tmp): each
function serves real requests so, in a mount namespace where `/` is remounted read-only."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import requests

from common.server import worker_tmp_dir
from pipeline.netutil import free_port
from tests.functions.conftest import Account, start_function, stop_function

# Root (as CI runs) remounts / read-only in a private mount namespace; other users get one
# through a user namespace of their own. /tmp too where it is a mount of its own (a tmpfs
# on many systems); /dev/shm, the memory filesystem a pod keeps writable, stays so.
READ_ONLY_ROOT = [
    "unshare",
    *([] if os.geteuid() == 0 else ["--user", "--map-root-user"]),
    "--mount",
    "--propagation",
    "private",
    "sh",
    "-c",
    "mount -o bind,remount,ro / && "
    "{ ! mountpoint -q /tmp || mount -o bind,remount,ro /tmp; } && "
    'exec "$@"',
    "read-only-root",
]


def test_the_namespace_really_is_read_only(tmp_path: Path) -> None:
    probe = subprocess.run(
        [*READ_ONLY_ROOT, "sh", "-c", f"touch {tmp_path}/x; touch /dev/shm/salesmart-probe"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert "Read-only file system" in probe.stderr
    assert not (tmp_path / "x").exists()
    Path("/dev/shm/salesmart-probe").unlink()  # written: the memory filesystem stays open


def test_every_function_serves_from_a_read_only_root(
    marts_dsn: str, analyst: Account, tmp_path: Path
) -> None:
    assert worker_tmp_dir() == "/dev/shm"  # gunicorn's heartbeat files
    env = {"SALESMART_DATABASE_URL": marts_dsn}
    started = {
        name: start_function(name, env, tmp_path, wrapper=READ_ONLY_ROOT)
        for name in ("token", "trends_pg", "dashboard")
    }
    started["trends_bq"] = start_function(
        "trends_bq",
        {"SALESMART_BQ_ENDPOINT": f"http://127.0.0.1:{free_port()}"},  # none: 503
        tmp_path,
        wrapper=READ_ONLY_ROOT,
    )
    try:
        login = requests.post(
            f"{started['token'].url}/token",
            data={"username": analyst.username, "password": analyst.password},
            timeout=30,
        )
        assert login.status_code == 200, login.text
        bearer = {"Authorization": f"Bearer {login.json()['access_token']}"}
        trends = requests.get(
            f"{started['trends_pg'].url}/sales/pg-trends", headers=bearer, timeout=30
        )
        assert trends.status_code == 200 and trends.json(), trends.text
        page = requests.get(f"{started['dashboard'].url}/", headers=bearer, timeout=30)
        assert page.status_code == 200 and "<table" in page.text
        unreachable = requests.get(
            f"{started['trends_bq'].url}/sales/trends", headers=bearer, timeout=60
        )
        assert unreachable.status_code == 503
        # A large multipart part would be spooled to a temporary file, which this root cannot
        # hold: it is refused while read, declared length or chunked, on both form readers.
        part = {"f": ("big.bin", b"x" * 700_000)}
        fields = {"username": analyst.username, "password": analyst.password}
        for url in (f"{started['token'].url}/token", f"{started['dashboard'].url}/login"):
            sized = requests.post(url, data=fields, files=part, timeout=30)
            assert sized.status_code in (400, 413), (url, sized.status_code, sized.text)
            chunked = requests.post(
                url,
                data=iter(
                    [b"--b\r\nContent-Disposition: form-data; name=f; filename=x\r\n\r\n"]
                    + [b"x" * 65536] * 12
                    + [b"\r\n--b--\r\n"]
                ),
                headers={"Content-Type": "multipart/form-data; boundary=b"},
                timeout=30,
            )
            assert chunked.status_code in (400, 413), (url, chunked.status_code, chunked.text)
    finally:
        for served in started.values():
            stop_function(served.process)
    for served in started.values():
        assert "Read-only file system" not in served.output(), served.output()
        for failure in ("unhandled error", "Exception on", "Traceback"):
            assert failure not in served.output(), served.output()


@pytest.mark.parametrize("writable", [False, True])
def test_gunicorn_keeps_its_default_without_a_writable_memory_filesystem(
    tmp_path: Path, writable: bool
) -> None:
    folder = tmp_path / "shm"
    folder.mkdir(mode=0o700 if writable else 0o500)
    assert worker_tmp_dir(str(tmp_path / "absent")) is None
    if os.geteuid() != 0:  # root may write anywhere: only the existence check applies
        assert worker_tmp_dir(str(folder)) == (str(folder) if writable else None)
    else:
        assert worker_tmp_dir(str(folder)) == str(folder)
