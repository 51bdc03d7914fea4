"""The migration Job's exact command and environment (as rendered by the chart) migrate a real
PostgreSQL database, twice (install, then upgrade), from a working directory it cannot use."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from common.pg import connect
from pipeline.postgres_embedded import EmbeddedPostgres
from pipeline.render_manifests import render_chart
from tests.conftest import create_database
from tests.deploy.conftest import by_kind

REPO_ROOT = Path(__file__).resolve().parents[2]


def _job_process(
    objects: list[dict[str, Any]], root: Path, secret: dict[str, str]
) -> tuple[list[str], dict[str, str]]:
    """The Job container's command and env, with its mounts mapped under ``root``."""
    job = by_kind(objects, "Job")["salesmart-migrate"]
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    config_maps = by_kind(objects, "ConfigMap")
    for volume in pod["volumes"]:
        target = root / mounts[volume["name"]].lstrip("/")
        target.mkdir(parents=True, exist_ok=True)
        if "configMap" in volume:
            for key, text in config_maps[volume["configMap"]["name"]]["data"].items():
                (target / key).write_text(text, encoding="utf-8")

    def mapped(value: str) -> str:
        for path in mounts.values():
            if value == path or value.startswith(path + "/"):
                return str(root / value.lstrip("/"))
        return value

    env = {k: v for k, v in os.environ.items() if not k.startswith(("SALESMART_", "GOOGLE_"))}
    env["PATH"] = f"{REPO_ROOT / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    for variable in container["env"]:
        if "value" in variable:
            env[variable["name"]] = mapped(variable["value"])
        else:
            env[variable["name"]] = secret[variable["valueFrom"]["secretKeyRef"]["key"]]
    return list(container["command"]), env


def test_migration_job_command_migrates_a_real_database(
    pg_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    dsn = create_database(pg_server, migrated=False)
    command, env = _job_process(render_chart(), tmp_path / "pod", {"database-url": dsn})
    workdir = tmp_path / "app"
    workdir.mkdir()

    first = subprocess.run(
        command, cwd=workdir, env=env, capture_output=True, text=True, timeout=120
    )
    assert first.returncode == 0, first.stderr
    conn = connect(dsn)
    try:
        tables = {
            row[0]
            for row in conn.run(
                "SELECT table_schema || '.' || table_name FROM information_schema.tables "
                "WHERE table_schema IN ('raw', 'auth')"
            )
        }
    finally:
        conn.close()
    assert {"raw.transactions", "raw.rejected_transactions", "raw.loads", "auth.users"} <= tables

    # helm upgrade runs the hook again: nothing left to apply, still a success.
    second = subprocess.run(
        command, cwd=workdir, env=env, capture_output=True, text=True, timeout=120
    )
    assert second.returncode == 0, second.stderr
    assert "up to date" in second.stdout
    # Nothing is written where the image's code lives; state goes to the scratch volume.
    assert list(workdir.iterdir()) == []
