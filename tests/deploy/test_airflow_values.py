"""helm/airflow-values.yaml: values for the official Apache Airflow chart (no Airflow objects of
our own), wired to the image's Airflow target and to the salesmart chart's Secret."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
VALUES: dict[str, Any] = yaml.safe_load((REPO_ROOT / "helm" / "airflow-values.yaml").read_text())
CHART_VALUES: dict[str, Any] = yaml.safe_load(
    (REPO_ROOT / "helm" / "salesmart" / "values.yaml").read_text()
)

# Top-level values of the official chart (apache/airflow chart/values.yaml) this file may use.
OFFICIAL_TOP_LEVEL = {
    "airflowVersion",
    "defaultAirflowTag",
    "defaultAirflowRepository",
    "images",
    "executor",
    "dags",
    "config",
    "env",
    "secret",
    "volumes",
    "volumeMounts",
    "postgresql",
    "data",
    "fernetKeySecretName",
    "apiSecretKeySecretName",
    "jwtSecretName",
    "webserverSecretKeySecretName",
    "scheduler",
    "triggerer",
    "dagProcessor",
    "workers",
    "apiServer",
    "webserver",
    "logs",
    "extraEnvFrom",
    "extraSecrets",
    "labels",
    "nodeSelector",
    "tolerations",
    "affinity",
    "createUserJob",
    "migrateDatabaseJob",
}
EXECUTORS = {
    "LocalExecutor",
    "CeleryExecutor",
    "KubernetesExecutor",
    "CeleryKubernetesExecutor",
    "LocalKubernetesExecutor",
}


def test_only_official_chart_values_are_used() -> None:
    assert set(VALUES) <= OFFICIAL_TOP_LEVEL, set(VALUES) - OFFICIAL_TOP_LEVEL
    assert VALUES["executor"] in EXECUTORS
    assert set(VALUES["images"]) == {"airflow"}
    assert set(VALUES["images"]["airflow"]) <= {"repository", "tag", "digest", "pullPolicy"}
    assert VALUES["postgresql"] == {"enabled": False}
    assert set(VALUES["data"]) == {"metadataSecretName"}
    for entry in VALUES["env"]:
        assert set(entry) == {"name", "value"} and isinstance(entry["value"], str)
    for entry in VALUES["secret"]:
        assert set(entry) == {"envName", "secretName", "secretKey"}
    # Airflow config values are strings (they become AIRFLOW__SECTION__KEY variables).
    for section in VALUES["config"].values():
        assert all(isinstance(value, str) for value in section.values())


def test_runs_the_project_image_and_its_baked_dags() -> None:
    image = VALUES["images"]["airflow"]
    assert image["repository"] == "salesmart-airflow"
    chart = yaml.safe_load((REPO_ROOT / "helm" / "salesmart" / "Chart.yaml").read_text())
    assert image["tag"] == chart["appVersion"]
    assert VALUES["airflowVersion"] == VALUES["defaultAirflowTag"]
    assert int(VALUES["airflowVersion"].split(".")[0]) >= 3  # Airflow 2 conflicts (Flask 3)
    # DAGs come from the image; no git-sync or volume is needed unless an operator opts in.
    assert VALUES["dags"]["gitSync"]["enabled"] is False
    assert VALUES["dags"]["persistence"]["enabled"] is False
    assert VALUES["config"]["core"]["load_examples"] == "False"
    # Above the 30 s default: a first parse lists the dbt project twice (dags/README.md).
    assert int(VALUES["config"]["core"]["dagbag_import_timeout"]) >= 120
    # The processor's own timeout (50 s by default) would otherwise kill that parse first.
    assert int(VALUES["config"]["dag_processor"]["dag_file_processor_timeout"]) > int(
        VALUES["config"]["core"]["dagbag_import_timeout"]
    )


def test_tasks_get_the_salesmart_secret_and_bigquery_credentials() -> None:
    secrets = {entry["envName"]: entry for entry in VALUES["secret"]}
    keys = CHART_VALUES["secrets"]["keys"]
    assert secrets["SALESMART_DATABASE_URL"]["secretKey"] == keys["databaseUrl"]
    assert secrets["SALESMART_PII_KEY"]["secretKey"] == keys["piiKey"]
    assert {entry["secretName"] for entry in VALUES["secret"]} == {
        CHART_VALUES["secrets"]["existingSecret"]
    }
    env = {entry["name"]: entry["value"] for entry in VALUES["env"]}
    assert env["SALESMART_ENV"] == "prod"
    # A real BigQuery project: without it the tasks use the config's local placeholder.
    placeholder = yaml.safe_load((REPO_ROOT / "data" / "pipeline_config.yaml").read_text())
    assert env["SALESMART_BQ_PROJECT"] not in ("", placeholder["data_warehouse"]["project_id"])
    mount = VALUES["volumeMounts"][0]
    assert env["GOOGLE_APPLICATION_CREDENTIALS"].startswith(mount["mountPath"] + "/")
    assert mount["readOnly"] is True
    assert VALUES["volumes"][0]["name"] == mount["name"]
    # No secret value is ever written into the values file.
    text = (REPO_ROOT / "helm" / "airflow-values.yaml").read_text()
    assert "password:" not in text.lower() and "fernetKey:" not in text


def test_tasks_read_the_salesmart_charts_pipeline_configuration(
    default_objects: list[dict[str, Any]],
) -> None:
    """The image's own copy of the configuration ignored the chart's pipelineConfig: the DAG
    built the marts in one schema and the functions read another (found by an operator
    audit)."""
    env = {entry["name"]: entry["value"] for entry in VALUES["env"]}
    volumes = {volume["name"]: volume for volume in VALUES["volumes"]}
    mounts = {mount["mountPath"]: mount for mount in VALUES["volumeMounts"]}
    folder, _, key = env["SALESMART_CONFIG"].rpartition("/")
    mount = mounts[folder]
    assert mount["readOnly"] is True
    config_map = volumes[mount["name"]]["configMap"]
    # The ConfigMap the salesmart chart renders (release salesmart) holds that key.
    rendered = {
        obj["metadata"]["name"]: obj for obj in default_objects if obj["kind"] == "ConfigMap"
    }
    assert key in rendered[config_map["name"]]["data"]
    assert not config_map.get("optional")  # a task must not fall back to another config
    # Nothing in the environment overrides what the configuration says of the warehouses.
    warehouse = {
        "SALESMART_BQ_LOCATION",
        "SALESMART_BQ_WAREHOUSE_DATASET",
        "SALESMART_BQ_MART_DATASET",
    }
    assert not {*warehouse, "SALESMART_PG_MART_SCHEMA"} & set(env)


def test_no_home_made_airflow_deployment() -> None:
    for path in [*(REPO_ROOT / "helm").rglob("*.yaml"), *(REPO_ROOT / "k8s").rglob("*.yaml")]:
        text = path.read_text()
        for kind in ("Deployment", "StatefulSet", "DaemonSet"):
            assert f"kind: {kind}" not in text, path
        assert "apache/airflow" not in text or path.name == "airflow-values.yaml", path


def test_the_ui_has_no_default_account() -> None:
    """The official chart defaults to the FAB auth manager and a create-user job making
    admin/admin; helm/README.md says the simple one's generated passwords are used (an
    orchestration audit)."""
    assert VALUES["config"]["core"]["auth_manager"] == (
        "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
    )
    assert VALUES["webserver"]["defaultUser"]["enabled"] is False
    airflow = REPO_ROOT / ".venv-airflow" / "bin" / "python"
    module, _, name = VALUES["config"]["core"]["auth_manager"].rpartition(".")
    found = subprocess.run(
        [str(airflow), "-c", f"from {module} import {name}"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert found.returncode == 0, found.stderr  # the class Airflow would load exists
