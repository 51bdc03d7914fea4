"""The container image, without Docker: its Dockerfile and .dockerignore are checked as text,
and its exact entrypoint command is started locally for each function (the Dockerfile's
ENTRYPOINT and ENV, with /app mapped to this checkout) until /healthz answers 200."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.deploy.conftest import FUNCTIONS
from tests.dockerfile import DOCKERFILE, Stage, parse_dockerfile

REPO_ROOT = Path(__file__).resolve().parents[2]
IMAGE_WORKDIR = "/app"
VALUES = yaml.safe_load((REPO_ROOT / "helm" / "salesmart" / "values.yaml").read_text())
STARTUP_TIMEOUT_S = 30.0


GLOBAL_ARGS, STAGES = parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))
BY_NAME = {stage.name: stage for stage in STAGES}


def _from_chain(stage: Stage) -> list[Stage]:
    chain = [stage]
    while chain[-1].base in BY_NAME:
        chain.append(BY_NAME[chain[-1].base])
    return chain


def _on_host(value: str) -> str:
    """An image path under /app as the same path in this checkout."""
    if value == IMAGE_WORKDIR or value.startswith(IMAGE_WORKDIR + "/"):
        return str(REPO_ROOT) + value[len(IMAGE_WORKDIR) :]
    return value


# ---- Dockerfile ---------------------------------------------------------------------------


def test_default_target_is_a_slim_non_root_serving_image() -> None:
    serve = STAGES[-1]
    assert serve.name == "serve", "the default (last) stage must be the serving image"
    assert _from_chain(serve)[-1].base == "python:3.11-slim"
    user, _, group = serve.user.partition(":")
    assert user.isdigit() and int(user) != 0, "numeric non-root USER (runAsNonRoot needs it)"
    assert group.isdigit() and int(group) != 0
    assert serve.workdir == IMAGE_WORKDIR
    # Only [project].dependencies: the wheel set built from "." without extras.
    installs = [r for r in serve.runs if "pip install" in r]
    assert len(installs) == 1
    assert "/wheels/serve" in installs[0] and "[" not in installs[0].split("pip install")[1]
    assert "--no-index" in installs[0]
    build = BY_NAME["build"]
    # the serving wheels: the hash-pinned lock of [project].dependencies, then the project
    assert any(
        "--require-hashes --wheel-dir /wheels/serve -r requirements/serve.txt" in r
        for r in build.runs
    )
    assert any("pip wheel --no-deps --wheel-dir /wheels/serve ." in r for r in build.runs)
    assert not any(re.search(r"dbt|airflow", r) for stage in _from_chain(serve) for r in stage.runs)


def test_entrypoint_is_the_salesmart_serve_script() -> None:
    serve = STAGES[-1]
    assert serve.entrypoint == ["/app/deploy/entrypoint.sh"]
    script = Path(_on_host(serve.entrypoint[0]))
    assert script.is_file() and os.access(script, os.X_OK)
    text = script.read_text()
    assert text.startswith("#!/bin/sh\n")
    assert 'exec salesmart-serve --source "$FUNCTION_SOURCE" --target "$FUNCTION_TARGET"' in text
    runtime_copies = [c for stage in _from_chain(serve) for c in stage.copies]
    assert ["deploy/entrypoint.sh", "deploy/entrypoint.sh"] in runtime_copies
    assert ["functions", "functions"] in runtime_copies


def test_gunicorn_threads_agree_with_knative_concurrency_by_default() -> None:
    env = STAGES[-1].env
    assert env["PORT"] == "8080"
    for name in FUNCTIONS:
        fn = VALUES["functions"][name]
        assert fn["threads"] is None  # derived from containerConcurrency by the chart
        assert int(env["WORKERS"]) == fn["workers"]
        # One thread more than Knative's requests: the probes never wait behind them.
        assert int(env["WORKERS"]) * int(env["THREADS"]) == fn["containerConcurrency"] + 1, name
    uid, _, gid = STAGES[-1].user.partition(":")
    assert VALUES["containerSecurityContext"]["runAsUser"] == int(uid)
    assert VALUES["containerSecurityContext"]["runAsGroup"] == int(gid)


def test_cli_target_adds_the_cli_extra_for_the_migration_job() -> None:
    cli = BY_NAME["cli"]
    assert cli.base == "runtime"
    # every wheel of the cli lock (the project with its `cli` extra), resolved by `make lock`
    assert any("/wheels/cli" in r and "--no-deps /wheels/*.whl" in r for r in cli.runs)
    build = BY_NAME["build"]
    assert any("--wheel-dir /wheels/cli -r requirements/cli.txt" in r for r in build.runs)
    assert any("pip wheel --no-deps --wheel-dir /wheels/cli ." in r for r in build.runs)
    assert cli.entrypoint == ["salesmart"]
    assert cli.user == STAGES[-1].user
    assert VALUES["migration"]["image"]["repository"] == "salesmart-cli"


def test_airflow_target_bakes_dags_dbt_and_a_separate_dbt_environment() -> None:
    airflow = BY_NAME["airflow"]
    version = GLOBAL_ARGS["AIRFLOW_VERSION"]
    assert airflow.base == f"apache/airflow:{version}-python3.11"
    assert any(
        "/opt/airflow/dbt-venv/bin/pip install" in r and "requirements-dbt.txt" in r
        for r in airflow.runs
    )
    # Airflow itself from the same hash-pinned lock as .venv-airflow, at the image's version.
    assert any(
        "pip install" in r and "--require-hashes -r" in r and "requirements-airflow.txt" in r
        for r in airflow.runs
    )
    assert ["requirements/airflow.txt", "/opt/airflow/salesmart/requirements-airflow.txt"] in (
        airflow.copies
    )
    lock = (REPO_ROOT / "requirements" / "airflow.txt").read_text()
    assert re.search(rf"^apache-airflow=={re.escape(version)} ", lock, re.MULTILINE)
    # Every install is hash-checked, or from the wheels built from the locks (no index).
    installs = [r for r in airflow.runs if "pip install" in r]
    assert all("--require-hashes" in r or "--no-index" in r for r in installs), installs
    assert ["dags", "/opt/airflow/dags"] in airflow.copies
    assert ["dbt", "/opt/airflow/salesmart/dbt"] in airflow.copies
    values = yaml.safe_load((REPO_ROOT / "helm" / "airflow-values.yaml").read_text())
    assert values["airflowVersion"] == values["defaultAirflowTag"] == version


def _dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents wins."""
    excluded = False
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for raw in patterns:
        negated = raw.startswith("!")
        pattern = raw.lstrip("!").strip("/")
        regex = re.escape(pattern).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*")
        regex = regex.replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        if any(re.fullmatch(regex, prefix) for prefix in prefixes):
            excluded = not negated
    return excluded


def test_dockerignore_keeps_the_context_to_what_the_images_need() -> None:
    patterns = [
        line.strip()
        for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", "an allow-list: everything is excluded unless named"
    for kept in (
        "pyproject.toml",
        "README.md",
        "common/config.py",
        "pipeline/cli.py",
        "functions/token/main.py",
        "deploy/entrypoint.sh",
        "data/pipeline_config.yaml",
        "requirements/dbt.txt",
        "dags/transform_sales_mart.py",
        "dbt/dbt_project.yml",
    ):
        assert not _dockerignore_excludes(kept, patterns), kept
    for dropped in (
        ".venv/bin/python",
        ".venv-dbt/bin/dbt",
        ".salesmart/admin-password",
        ".salesmart/jwt-secret",
        ".git/config",
        "tests/conftest.py",
        "data/transactions.csv",
        "common/__pycache__/config.cpython-311.pyc",
        "dbt/target/manifest.json",
        "bench/results/x.json",
        "helm/salesmart/Chart.yaml",
    ):
        assert _dockerignore_excludes(dropped, patterns), dropped
    # Every file the Dockerfile copies from the context is in it.
    for stage in STAGES:
        for copy in stage.copies:
            for source in copy[:-1]:
                if not source.startswith("/"):
                    assert not _dockerignore_excludes(source, patterns), (stage.name, source)
                    assert (REPO_ROOT / source).exists() or source in {
                        "README.md",
                        "dags",
                        "dbt",
                        "functions",
                    }


# ---- the entrypoint, started for real ------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _entrypoint_env(function: str, port: int, state_dir: Path) -> dict[str, str]:
    """The serving image's ENV (paths mapped to this checkout) plus what the chart sets for a
    production deployment; nothing reaches beyond loopback and no warehouse is needed."""
    closed = _free_port()  # nothing listens here: /healthz must not touch a warehouse
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SALESMART_", "GOOGLE_", "FUNCTION_", "GCE_"))
    }
    env.update({key: _on_host(value) for key, value in STAGES[-1].env.items()})
    env.update(
        {
            "PATH": f"{REPO_ROOT / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}",
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "FUNCTION_TARGET": function,
            "SALESMART_ENV": "prod",
            "SALESMART_STATE_DIR": str(state_dir),
            "SALESMART_JWT_SECRET": "entrypoint-test-jwt-secret-" + "j" * 32,
            "SALESMART_PII_KEY": "entrypoint-test-pii-key-" + "p" * 32,
            "SALESMART_DATABASE_URL": (
                f"postgresql://salesmart:{'unused' * 8}@127.0.0.1:{closed}/salesmart"
            ),
            "SALESMART_BQ_PROJECT": "salesmart-test",
            "SALESMART_BQ_ENDPOINT": f"http://127.0.0.1:{closed}",
            "GCE_METADATA_HOST": f"127.0.0.1:{closed}",
            "GCE_METADATA_IP": f"127.0.0.1:{closed}",
        }
    )
    return env


def _get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (loopback)
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


@pytest.mark.parametrize("function", FUNCTIONS)
def test_image_entrypoint_serves_health_for_each_function(function: str, tmp_path: Path) -> None:
    port = _free_port()
    command = [_on_host(arg) for arg in STAGES[-1].entrypoint]
    log = tmp_path / "server.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            command,
            cwd=_on_host(STAGES[-1].workdir),
            env=_entrypoint_env(function, port, tmp_path),
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        status, body = 0, b""
        headers: dict[str, str] = {}
        while time.monotonic() < deadline and process.poll() is None:
            try:
                status, headers, body = _get(f"http://127.0.0.1:{port}/healthz")
                if status == 200:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        output = log.read_text(errors="replace")[-3000:]
        assert process.poll() is None, f"{function} exited ({process.returncode}):\n{output}"
        assert status == 200, f"{function}: /healthz gave {status}:\n{output}"
        assert isinstance(json.loads(body), dict)
        assert headers.get("Server", "").startswith("gunicorn"), headers
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)
    # gunicorn stops on SIGTERM (what Kubernetes sends) without being killed.
    assert process.returncode == 0, log.read_text(errors="replace")[-2000:]


@pytest.mark.parametrize(
    ("extra", "code", "message"),
    [
        ({}, 64, "set FUNCTION_TARGET to one of: token, trends_bq, trends_pg, dashboard"),
        ({"FUNCTION_TARGET": "reports"}, 64, "dashboard (it is 'reports')"),
        # A path in the name served another function (an audit).
        ({"FUNCTION_TARGET": "token/../trends_pg"}, 64, "(it is 'token/../trends_pg')"),
        (
            {"FUNCTION_TARGET": "mine", "FUNCTION_SOURCE": "functions/mine/main.py"},
            66,
            "no function source at functions/mine/main.py",
        ),
        ({"FUNCTION_SOURCE": "functions/token/main.py"}, 64, "set FUNCTION_TARGET to the"),
    ],
    ids=["no-target", "unknown-target", "path-in-target", "own-source-missing", "source-only"],
)
def test_entrypoint_refuses_a_missing_function(
    extra: dict[str, str], code: int, message: str, tmp_path: Path
) -> None:
    env = _entrypoint_env("token", _free_port(), tmp_path)
    env.pop("FUNCTION_TARGET")
    env.update(extra)
    done = subprocess.run(
        [_on_host(STAGES[-1].entrypoint[0])],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == code
    assert message in done.stderr


def test_the_entrypoint_serves_the_projects_functions_by_name() -> None:
    """The shell script cannot import common.functions: its list is held to it here."""
    from common.functions import FUNCTIONS

    script = (REPO_ROOT / "deploy" / "entrypoint.sh").read_text(encoding="utf-8")
    (names,) = re.findall(r"^\s*([a-z_| ]+)\) ;;$", script, re.MULTILINE)
    assert [name.strip() for name in names.split("|")] == list(FUNCTIONS)
