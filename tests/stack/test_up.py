"""`salesmart up` end to end, as a newcomer runs it: one command, then Ctrl-C.

Starts the real embedded PostgreSQL, the real BigQuery stand-in, real dbt on both and the
four functions as real processes, in a fresh folder; asks both trend APIs for 2023-10.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import psutil
import pytest
import requests

from common.server import PARENT_PID_ENV
from tests.conftest import REPO_ROOT, free_port_base

ADMIN_PASSWORD = "demo-password-for-tests"
EXPECTED_2023_10 = [
    {
        "product": "Halal Laptop",
        "sale_month": "2023-10-01",
        "total_amount": 1999.98,
        "total_quantity": 2,
        "avg_price": 999.99,
        "transaction_count": 1,
    },
    {
        "product": "Halal Keyboard",
        "sale_month": "2023-10-01",
        "total_amount": 249.95,
        "total_quantity": 5,
        "avg_price": 49.99,
        "transaction_count": 1,
    },
    {
        "product": "Halal Mouse",
        "sale_month": "2023-10-01",
        "total_amount": 249.9,
        "total_quantity": 10,
        "avg_price": 24.99,
        "transaction_count": 1,
    },
]


class Stack:
    def __init__(self, folder: Path, process: subprocess.Popen[str]) -> None:
        self.folder = folder
        self.process = process

    @property
    def endpoints_file(self) -> Path:
        return self.folder / ".salesmart" / "endpoints.json"

    def endpoints(self) -> dict[str, Any]:
        data = json.loads(self.endpoints_file.read_text())
        assert isinstance(data, dict)
        return data


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SALESMART_STATE_DIR",)}
    env["SALESMART_ADMIN_PASSWORD"] = ADMIN_PASSWORD
    for key in (
        "SALESMART_BQ_ENDPOINT",
        "SALESMART_BQ_PROJECT",
        "GOOGLE_APPLICATION_CREDENTIALS",
        "SALESMART_DATABASE_URL",
    ):
        env.pop(key, None)
    return env


def _start_up(folder: Path, log: IO[str]) -> subprocess.Popen[str]:
    """`salesmart up` in ``folder`` on free ports, started as a non-interactive shell starts
    a background job (`salesmart up &`): SIGINT ignored. Ctrl-C must stop it all the same."""
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "up", "--port-base", str(free_port_base())],
        cwd=folder,
        env=_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    folder = Path(tempfile.mkdtemp(prefix="salesmart-up-"))
    folder.chmod(0o755)
    log = (folder / "up.log").open("w")
    process = _start_up(folder, log)
    up = Stack(folder, process)
    deadline = time.monotonic() + 300
    while not up.endpoints_file.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail("salesmart up did not come up:\n" + (folder / "up.log").read_text())
        time.sleep(0.5)
    yield up
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
    shutil.rmtree(folder, ignore_errors=True)


def _token(stack: Stack) -> str:
    response = requests.post(
        stack.endpoints()["token"] + "/token",
        data={"username": "admin", "password": ADMIN_PASSWORD},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    token = response.json()["access_token"]
    assert isinstance(token, str)
    return token


def test_endpoints_file_lists_every_service(stack: Stack) -> None:
    endpoints = stack.endpoints()
    assert set(endpoints) == {
        "token",
        "trends_bq",
        "trends_pg",
        "dashboard",
        "postgres",
        "bigquery",
    }
    for name in ("token", "trends_bq", "trends_pg", "dashboard", "bigquery"):
        assert endpoints[name].startswith("http://127.0.0.1:")
    assert endpoints["postgres"].startswith("postgresql://")
    assert oct(stack.endpoints_file.stat().st_mode)[-3:] == "600"


@pytest.mark.parametrize(
    ("function", "path"), [("trends_pg", "/sales/pg-trends"), ("trends_bq", "/sales/trends")]
)
def test_both_trend_apis_answer_the_sample(stack: Stack, function: str, path: str) -> None:
    response = requests.get(
        stack.endpoints()[function] + path,
        params={"sale_month": "2023-10"},
        headers={"Authorization": f"Bearer {_token(stack)}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert response.json() == EXPECTED_2023_10


def test_a_bigquery_stand_in_that_dies_is_started_again(stack: Stack) -> None:
    # The stand-in killed outright while up serves: up starts it again on the same port and
    # data, so trends_bq, which answers 503 meanwhile, recovers without anyone's help.
    pid_file = stack.folder / ".salesmart" / "bigquery" / "bqemulator.pid"
    old_pid = int(pid_file.read_text().strip())
    endpoint = stack.endpoints()["bigquery"]
    os.kill(old_pid, signal.SIGKILL)
    url = stack.endpoints()["trends_bq"] + "/sales/trends"
    headers = {"Authorization": f"Bearer {_token(stack)}"}
    statuses = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        answer = requests.get(url, params={"sale_month": "2023-10"}, headers=headers, timeout=30)
        statuses.append(answer.status_code)
        if answer.status_code == 200:
            break
        assert answer.status_code == 503, answer.text
        time.sleep(0.5)
    assert statuses[-1] == 200, statuses
    assert answer.json() == EXPECTED_2023_10  # the same data, loaded before the kill
    assert stack.endpoints()["bigquery"] == endpoint
    assert int(pid_file.read_text().strip()) != old_pid
    assert stack.process.poll() is None  # up itself serves on
    assert "the BigQuery stand-in stopped (exit -9); starting it again" in (
        (stack.folder / "up.log").read_text()
    )


def test_an_embedded_postgresql_that_dies_is_started_again(stack: Stack) -> None:
    # The embedded server's postmaster killed outright while up serves: up starts it again
    # on the same port and data, so trends_pg, which answers 503 meanwhile, recovers.
    pid_file = stack.folder / ".salesmart" / "postgres" / "data" / "postmaster.pid"
    old_pid = int(pid_file.read_text().splitlines()[0])
    dsn = stack.endpoints()["postgres"]
    url = stack.endpoints()["trends_pg"] + "/sales/pg-trends"
    headers = {"Authorization": f"Bearer {_token(stack)}"}
    os.kill(old_pid, signal.SIGKILL)
    statuses = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        answer = requests.get(url, params={"sale_month": "2023-10"}, headers=headers, timeout=30)
        statuses.append(answer.status_code)
        # A backend that has not yet noticed its postmaster's death may answer one last time:
        # done only once a new server (pid) answers.
        if answer.status_code == 200 and _postmaster_pid(pid_file) not in (None, old_pid):
            break
        assert answer.status_code in (200, 503), answer.text
        time.sleep(0.5)
    assert statuses[-1] == 200, statuses
    assert answer.json() == EXPECTED_2023_10  # the same data, loaded before the kill
    assert stack.endpoints()["postgres"] == dsn
    assert stack.process.poll() is None  # up itself serves on
    assert "PostgreSQL (embedded) stopped; starting it again" in (
        (stack.folder / "up.log").read_text()
    )
    # Logging in needs PostgreSQL too, and works again.
    assert _token(stack)


def _postmaster_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None  # between the old server's file and the new one's


def test_each_function_url_answers_at_its_root(stack: Stack) -> None:
    endpoints = stack.endpoints()
    login = requests.post(
        endpoints["token"], data={"username": "admin", "password": ADMIN_PASSWORD}, timeout=10
    )
    assert login.status_code == 200, login.text
    bearer = {"Authorization": f"Bearer {login.json()['access_token']}"}
    for function in ("trends_pg", "trends_bq"):
        response = requests.get(
            endpoints[function], params={"sale_month": "2023-10-01"}, headers=bearer, timeout=30
        )
        assert response.status_code == 200, response.text
        assert response.json() == EXPECTED_2023_10
    page = requests.get(endpoints["dashboard"], allow_redirects=False, timeout=10)
    assert page.status_code == 303 and page.headers["Location"].endswith("/login")


def test_other_commands_use_the_running_stack(stack: Stack) -> None:
    listing = _salesmart(stack.folder, "users", "list", timeout=60)
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.startswith("admin\tadmin\tactive")


@pytest.mark.parametrize(
    ("function", "path"), [("trends_pg", "/sales/pg-trends"), ("trends_bq", "/sales/trends")]
)
def test_a_function_served_by_hand_beside_up_uses_its_stack(
    stack: Stack, function: str, path: str
) -> None:
    """The contract's ``functions-framework --source functions/NAME/main.py --target NAME``,
    started in up's folder as a local run (``SALESMART_ENV=dev``) and given nothing else:
    it serves up's warehouses and accepts up's tokens (it is not given up's JWT key)."""
    env = {
        key: value
        for key, value in _env().items()
        if key not in ("SALESMART_JWT_SECRET", "SALESMART_PII_KEY")
    }
    port = free_port_base(1)
    log_path = stack.folder / f"by-hand-{function}.log"
    with log_path.open("w") as log:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "functions_framework",
                "--source",
                str(REPO_ROOT / "functions" / function / "main.py"),
                "--target",
                function,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            cwd=stack.folder,
            env={**env, "SALESMART_ENV": "dev"},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while not _listening(port):
            assert server.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
        response = requests.get(
            f"http://127.0.0.1:{port}{path}",
            params={"sale_month": "2023-10"},
            headers={"Authorization": f"Bearer {_token(stack)}"},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        assert response.json() == EXPECTED_2023_10
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_serving_goes_on_while_dbt_rebuilds_the_postgres_marts(stack: Stack) -> None:
    """The daily rebuild (``salesmart transform``, the DAG's task) runs beside live traffic:
    every request during it is answered, with the same rows."""
    url = stack.endpoints()["trends_pg"] + "/sales/pg-trends"
    bearer = {"Authorization": f"Bearer {_token(stack)}"}
    answers: list[tuple[int, Any]] = []
    done = threading.Event()

    def traffic() -> None:
        with requests.Session() as session:
            while not done.is_set():
                response = session.get(
                    url, params={"sale_month": "2023-10"}, headers=bearer, timeout=30
                )
                body = response.json() if response.status_code == 200 else response.text
                answers.append((response.status_code, body))
                time.sleep(0.02)

    client = threading.Thread(target=traffic)
    client.start()
    try:
        rebuild = _salesmart(stack.folder, "transform", "--target", "postgres")
    finally:
        done.set()
        client.join(timeout=60)
    assert rebuild.returncode == 0, rebuild.stderr
    assert len(answers) >= 20  # the rebuild took seconds: traffic ran through it
    assert [status for status, _ in answers if status != 200] == []
    assert all(body == EXPECTED_2023_10 for _, body in answers)


def _up_until_it_exits(folder: Path, port_base: int) -> subprocess.CompletedProcess[str]:
    """`salesmart up` run where it is expected to refuse to start."""
    return _salesmart(folder, "up", "--port-base", str(port_base), timeout=120)


def _salesmart(
    folder: Path, *args: str, timeout: float = 300, **extra_env: str
) -> subprocess.CompletedProcess[str]:
    """``salesmart ARGS`` run to completion in ``folder``, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        cwd=folder,
        env={**_env(), **extra_env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_the_functions_are_tied_to_up(stack: Stack) -> None:
    """Each function server is told `up`'s pid, so that it stops when `up` is killed
    outright (the server's side is tested in tests/functions/test_server_cli.py)."""
    ports = {
        str(int(url.rsplit(":", 1)[1].split("/")[0]))
        for name, url in stack.endpoints().items()
        if name in ("token", "trends_bq", "trends_pg", "dashboard")
    }
    tied = set()
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:  # not a process, or gone meanwhile
            continue
        port = argv[argv.index(b"--port") + 1].decode() if b"--port" in argv else ""
        if port in ports and f"{PARENT_PID_ENV}={stack.process.pid}".encode() in environ:
            tied.add(port)
    assert tied == ports


def test_second_up_in_the_same_folder_says_it_is_running(stack: Stack) -> None:
    second = _up_until_it_exits(stack.folder, 9990)
    assert second.returncode == 1
    assert "already running" in second.stderr


def test_ctrl_c_stops_everything(stack: Stack) -> None:
    """Pressed twice, as people do when stopping seems slow: the second one used to break
    off the stopping, leaving PostgreSQL running and ``up.pid`` behind (exit 130)."""
    endpoints = stack.endpoints()
    stack.process.send_signal(signal.SIGINT)
    time.sleep(0.3)
    stack.process.send_signal(signal.SIGINT)
    assert stack.process.wait(timeout=60) == 0
    assert not stack.endpoints_file.exists()
    assert not (stack.folder / ".salesmart" / "up.pid").exists()
    for name in ("token", "trends_bq", "trends_pg", "dashboard", "bigquery"):
        port = int(endpoints[name].rsplit(":", 1)[1].split("/")[0])
        assert not _listening(port), f"{name} still listens on {port}"
    pg_port = int(endpoints["postgres"].rsplit(":", 1)[1].split("/")[0])
    assert not _listening(pg_port), "PostgreSQL still listens"


def _running(process: psutil.Process) -> bool:
    """Alive and not a zombie; one that ended meanwhile is not running."""
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait_for_step(process: subprocess.Popen[str], log_path: Path, step: str) -> None:
    """Until ``up`` (still running) has printed ``step``; three minutes at most."""
    deadline = time.monotonic() + 180
    while step not in log_path.read_text():
        assert process.poll() is None, log_path.read_text()
        assert time.monotonic() < deadline, log_path.read_text()
        time.sleep(0.1)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_loading_or_building_stops_everything(
    tmp_path: Path, signum: signal.Signals
) -> None:
    """Ctrl-C (SIGINT, here ignored by the starter as in a background job) or SIGTERM
    before serving: ``up`` stops what it started and exits 130. SIGINT used to do nothing
    until the functions were up; SIGTERM used to kill ``up`` without its cleanups."""
    log_path = tmp_path / "up.log"
    with log_path.open("w") as log:
        process = _start_up(tmp_path, log)
        try:
            _wait_for_step(process, log_path, "dbt build on postgres")
            started = psutil.Process(process.pid).children(recursive=True)
            assert started  # PostgreSQL, the stand-in and dbt at least
            process.send_signal(signum)
            assert process.wait(timeout=60) == 130, log_path.read_text()
        finally:
            if process.poll() is None:
                process.kill()
    output = log_path.read_text()
    assert output.rstrip().endswith("stopped.\nsalesmart: interrupted"), output
    assert "Traceback" not in output
    _gone, alive = psutil.wait_procs(started, timeout=30)
    assert [p for p in alive if _running(p)] == []
    assert not (tmp_path / ".salesmart" / "endpoints.json").exists()
    assert not (tmp_path / ".salesmart" / "up.pid").exists()


def test_up_completes_a_file_that_only_one_warehouse_holds(tmp_path: Path) -> None:
    """An earlier ``up`` stopped between its two loads leaves the sample in PostgreSQL only
    (here made so by ``ingest --target postgres``). The next ``up`` loads it into BigQuery:
    it used to skip the file for both, and its dbt build on BigQuery then failed.
    A row loaded into PostgreSQL under looser thresholds is named by dbt's loading-rules
    warning in up's output (up printed "done" and nothing of it)."""
    sample = str(REPO_ROOT / "data" / "transactions.csv")
    loaded = _salesmart(tmp_path, "ingest", "--target", "postgres", sample)
    assert loaded.returncode == 0, loaded.stderr
    looser = tmp_path / "looser.yaml"
    looser.write_text("ingestion:\n  validation:\n    min_price: 1\n")
    cheap = tmp_path / "cheap.csv"
    cheap.write_text(
        "transaction_id,product,price,quantity,date\nC1,Halal Salt,5.00,1,2024-02-01\n"
    )
    loaded = _salesmart(
        tmp_path, "ingest", "--target", "postgres", str(cheap), SALESMART_CONFIG=str(looser)
    )
    assert loaded.returncode == 0 and "loaded 1" in loaded.stdout, loaded.stdout
    log_path = tmp_path / "up.log"
    with log_path.open("w") as log:
        process = _start_up(tmp_path, log)
        try:
            up = Stack(tmp_path, process)
            _wait_for_step(process, log_path, "salesmart is up")
            output = log_path.read_text()
            assert f"{sample} -> postgres: already loaded earlier, skipped" in output
            assert f"{sample} -> bigquery: read 5, loaded " in output, output
            warned = "test stg_transactions_follow_the_loading_rules (warn, 1 row)"
            assert f"  dbt on postgres warned: {warned}" in output, output
            assert "dbt on bigquery warned" not in output, output
            response = requests.get(
                up.endpoints()["trends_bq"] + "/sales/trends",
                params={"sale_month": "2023-10"},
                headers={"Authorization": f"Bearer {_token(up)}"},
                timeout=30,
            )
            assert response.status_code == 200, response.text
            assert response.json() == EXPECTED_2023_10
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=60) == 0, log_path.read_text()
        finally:
            if process.poll() is None:
                process.kill()


def test_a_second_up_while_the_first_is_still_starting_is_refused(tmp_path: Path) -> None:
    """A newcomer starting ``make up`` again in a second terminal while the first is still
    loading: the second stops at once, and the first goes on."""
    log_path = tmp_path / "up.log"
    with log_path.open("w") as log:
        first = _start_up(tmp_path, log)
        try:
            _wait_for_step(first, log_path, "starting PostgreSQL")
            second = _up_until_it_exits(tmp_path, free_port_base())
            assert second.returncode == 1
            assert second.stderr.strip() == (
                "salesmart: salesmart up is already starting in this folder;"
                " wait for it, or stop it"
            )
            assert first.poll() is None  # untouched by the second
            first.send_signal(signal.SIGINT)
            assert first.wait(timeout=60) == 130, log_path.read_text()
        finally:
            if first.poll() is None:
                first.kill()


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_a_taken_port_stops_up_before_anything_starts(tmp_path: Path) -> None:
    """Told at once, not after the loading and dbt builds that come before serving."""
    base = free_port_base()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", base + 2))
        taken.listen()
        result = _up_until_it_exits(tmp_path, base)
        via_make = _salesmart(
            tmp_path, "up", "--port-base", str(base), timeout=120, SALESMART_MAKE_UP="1"
        )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"salesmart: port {base + 2} on 127.0.0.1 is in use; choose others with --port-base"
    )
    # Under `make up`, the option is named as that command takes it.
    assert via_make.returncode == 1
    assert via_make.stderr.strip().endswith('choose others with make up UP_ARGS="--port-base P"')
    assert "starting" not in result.stdout + result.stderr
    assert not (tmp_path / ".salesmart" / "postgres").exists()
    assert not (tmp_path / ".salesmart" / "endpoints.json").exists()


@pytest.mark.parametrize("problem", ["missing", "no product column"])
def test_an_unusable_data_file_stops_up_before_anything_starts(
    tmp_path: Path, problem: str
) -> None:
    """Exit 2 and one line, as `salesmart ingest` says it, before any warehouse starts."""
    data = tmp_path / "sales.csv"
    if problem != "missing":
        data.write_text("transaction_id,price,quantity,date\nT1,10.00,1,2024-01-01\n")
    result = _salesmart(tmp_path, "up", "--data", str(data), "--port-base", str(free_port_base()))
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"salesmart: {data}: ")
    assert ("no such file" if problem == "missing" else "missing required column") in line
    assert "starting" not in result.stdout
    assert not (tmp_path / ".salesmart" / "postgres").exists()


def _make_dry_run(*args: str) -> str:
    """What ``make -n ARGS`` would run (nothing starts). Not as a sub-make of ``make test``:
    its flags would change what is printed."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    return subprocess.run(
        ["make", "--no-print-directory", "-n", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout


def test_make_up_hands_its_options_to_salesmart_up() -> None:
    """`make up UP_ARGS=...` is how a `make` user picks other ports."""
    dry = _make_dry_run("up", "UP_ARGS=--port-base 9080 --rows 10")
    runs = [line for line in dry.splitlines() if "salesmart up" in line]
    assert runs == ["SALESMART_MAKE_UP=1 .venv/bin/salesmart up --port-base 9080 --rows 10"], dry
    # Only what up runs is built: not Airflow's environment (make airflow / make test do).
    fresh = _make_dry_run("-B", "up")
    assert ".venv-dbt" in fresh and ".venv-bqemu" in fresh
    assert ".venv-airflow" not in fresh
