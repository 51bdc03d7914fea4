"""The Helm chart, rendered offline with helm-python-sdk: lint, objects for default and
overridden values (-f and --set layered as Helm's CLI does), values.schema.json, NOTES."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

from common.config import ConfigError, Settings, require_database
from common.pg import parse_dsn
from pipeline.render_manifests import CHART_DIR, RenderError, render_notes, user_values
from tests.deploy import knative_rules
from tests.deploy.conftest import FUNCTIONS, Objects, by_kind, env_of, knative_services

SCHEMA = json.loads((CHART_DIR / "values.schema.json").read_text(encoding="utf-8"))
DEFAULTS = yaml.safe_load((CHART_DIR / "values.yaml").read_text(encoding="utf-8"))
NEEDS_DATABASE = {"token", "trends_pg", "dashboard"}
GOOD_SECRET = "x" * 40
OTHER_SECRET = "y" * 40  # the functions refuse one key for both


def identities(objects: Objects) -> set[tuple[str, str, str]]:
    return {(o["apiVersion"], o["kind"], o["metadata"]["name"]) for o in objects}


def annotations_of(service: dict[str, Any]) -> dict[str, str]:
    return dict(service["spec"]["template"]["metadata"]["annotations"])


# ---- lint ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [
        None,
        {
            "secrets": {
                "existingSecret": "",
                "jwtSecret": GOOD_SECRET,
                "piiKey": OTHER_SECRET,
                "databaseUrl": "postgresql://u:database-password-of-32-bytes-00@db:5432/salesmart",
            }
        },
    ],
    ids=["defaults", "chart-created-secret"],
)
def test_lint_reports_no_errors_or_warnings(values: dict[str, Any] | None) -> None:
    report = helm.lint(
        CHART_DIR, values, strict=True, namespace="analytics", kube_version="v1.32.0"
    )
    assert report["errors"] == []
    serious = [m for m in report["messages"] if m["severity"] >= 2]
    assert serious == [], serious


def test_lint_fails_on_a_broken_chart(tmp_path: Path) -> None:
    # The lint gate can fail: a template with a syntax error is reported as an error.
    broken = tmp_path / "salesmart"
    with helm.Chart.load(CHART_DIR) as chart:
        chart.save_dir(tmp_path)
    (broken / "templates" / "broken.yaml").write_text("kind: {{ .Values.image.repository \n")
    report = helm.lint(broken)
    assert report["errors"] or any(m["severity"] == 3 for m in report["messages"])


# ---- default values -----------------------------------------------------------------------


def test_default_render_is_exactly_the_expected_objects(default_objects: Objects) -> None:
    assert identities(default_objects) == {
        ("v1", "ConfigMap", "salesmart-config"),
        ("v1", "ConfigMap", "salesmart-migrate-config"),
        ("batch/v1", "Job", "salesmart-migrate"),
        ("serving.knative.dev/v1", "Service", "salesmart-token"),
        ("serving.knative.dev/v1", "Service", "salesmart-trends-bq"),
        ("serving.knative.dev/v1", "Service", "salesmart-trends-pg"),
        ("serving.knative.dev/v1", "Service", "salesmart-dashboard"),
    }
    assert len(default_objects) == 7


def test_every_object_lives_in_the_release_namespace(render: Any) -> None:
    values = {
        "secrets": {
            "existingSecret": "",
            "jwtSecret": GOOD_SECRET,
            "piiKey": OTHER_SECRET,
            "databaseUrl": "postgresql://u:database-password-of-32-bytes-00@db/s",
        }
    }
    objects = render(values, release="sm", namespace="analytics-prod")
    assert {o["metadata"]["namespace"] for o in objects} == {"analytics-prod"}
    # ...and no template names a namespace of its own.
    for template in (CHART_DIR / "templates").iterdir():
        for line in template.read_text(encoding="utf-8").splitlines():
            if re.match(r"\s*namespace:", line):
                assert "{{ .Release.Namespace }}" in line or "$root.Release.Namespace" in line, (
                    template.name,
                    line,
                )


def test_default_services_autoscaling_and_concurrency(default_objects: Objects) -> None:
    services = knative_services(default_objects)
    assert set(services) == set(FUNCTIONS)
    for name, service in services.items():
        fn = DEFAULTS["functions"][name]
        auto = fn["autoscaling"]
        assert "annotations" not in service["metadata"]
        annotations = annotations_of(service)
        assert {k: v for k, v in annotations.items() if k.startswith("autoscaling.")} == {
            "autoscaling.knative.dev/class": "kpa.autoscaling.knative.dev",
            "autoscaling.knative.dev/metric": "concurrency",
            "autoscaling.knative.dev/target": str(auto["target"]),
            "autoscaling.knative.dev/min-scale": "0",
            "autoscaling.knative.dev/max-scale": str(auto["maxScale"]),
            "autoscaling.knative.dev/initial-scale": "1",
            "autoscaling.knative.dev/scale-down-delay": f"{auto['scaleDownDelaySeconds']}s",
        }
        spec = service["spec"]["template"]["spec"]
        env = env_of(service)
        # gunicorn serves as many requests at once as Knative sends, plus the probes.
        assert spec["containerConcurrency"] == fn["containerConcurrency"] == 8
        assert int(env["WORKERS"]) * int(env["THREADS"]) == spec["containerConcurrency"] + 1
        assert env["CLOUD_RUN_TIMEOUT_SECONDS"] == str(spec["timeoutSeconds"]) == "30"
        # salesmart-serve's own deadline follows it (its default, 60 s, cut longer ones off).
        assert env["SALESMART_REQUEST_DEADLINE_SECONDS"] == "30"
        assert env["FUNCTION_TARGET"] == name
        assert env["SALESMART_ENV"] == "prod"
        assert env["SALESMART_CONFIG"] == "/etc/salesmart/pipeline_config.yaml"
        container = spec["containers"][0]
        assert container["image"] == "salesmart:0.1.0"
        assert container["readinessProbe"]["httpGet"] == {"path": "/healthz"}
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz"}
        # Knative's aggressive cold-start probing stays on: no readiness period is set, and
        # so neither a timeout nor a threshold (Knative refuses those beside period 0).
        assert container["readinessProbe"] == {"httpGet": {"path": "/healthz"}}
        assert container["resources"] == fn["resources"]
        assert container["securityContext"]["runAsNonRoot"] is True
        # A refused start's reason (its last log line) shows in the Revision's status.
        assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
        assert spec["automountServiceAccountToken"] is False
        assert spec["volumes"] == [
            {"name": "pipeline-config", "configMap": {"name": "salesmart-config"}}
        ]


def test_default_services_read_only_the_secrets_they_need(default_objects: Objects) -> None:
    for name, service in knative_services(default_objects).items():
        env = env_of(service)
        assert env["SALESMART_JWT_SECRET"] == {
            "secretKeyRef": {"name": "salesmart-secrets", "key": "jwt-secret"}
        }
        assert env["SALESMART_PII_KEY"] == {
            "secretKeyRef": {"name": "salesmart-secrets", "key": "pii-key"}
        }
        if name in NEEDS_DATABASE:
            assert env["SALESMART_DATABASE_URL"] == {
                "secretKeyRef": {"name": "salesmart-secrets", "key": "database-url"}
            }
            assert not any(key.startswith(("SALESMART_BQ", "GOOGLE_")) for key in env)
        else:
            assert "SALESMART_DATABASE_URL" not in env
            assert "SALESMART_BQ_LOCATION" not in env  # the pipeline configuration's
            assert "GOOGLE_APPLICATION_CREDENTIALS" not in env  # ADC / Workload Identity


def test_config_map_is_the_pipeline_config(default_objects: Objects) -> None:
    config = by_kind(default_objects, "ConfigMap")
    shipped = (CHART_DIR.parent.parent / "data" / "pipeline_config.yaml").read_text()
    for name in ("salesmart-config", "salesmart-migrate-config"):
        text = config[name]["data"]["pipeline_config.yaml"]
        assert yaml.safe_load(text) == yaml.safe_load(shipped)


def test_migration_job_is_a_pre_install_upgrade_and_rollback_hook(default_objects: Objects) -> None:
    job = by_kind(default_objects, "Job")["salesmart-migrate"]
    # pre-rollback: a rollback to a release older than the database's schema fails in its
    # Job (migrate refuses a newer schema) before its functions run (an audit: a rollback
    # ran no hook, and the old functions served on the newer schema).
    assert job["metadata"]["annotations"]["helm.sh/hook"] == (
        "pre-install,pre-upgrade,pre-rollback"
    )
    hook_config = by_kind(default_objects, "ConfigMap")["salesmart-migrate-config"]
    assert (
        hook_config["metadata"]["annotations"]["helm.sh/hook"]
        == (job["metadata"]["annotations"]["helm.sh/hook"])
    )
    # The hook's config copy exists before the Job runs and is removed once hooks succeed.
    assert int(hook_config["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(
        job["metadata"]["annotations"]["helm.sh/hook-weight"]
    )
    assert "hook-succeeded" in hook_config["metadata"]["annotations"]["helm.sh/hook-delete-policy"]
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"] == ["salesmart", "migrate"]
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert container["image"] == "salesmart-cli:0.1.0"
    assert pod["restartPolicy"] == "Never"
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
    assert env["SALESMART_DATABASE_URL"] == {
        "secretKeyRef": {"name": "salesmart-secrets", "key": "database-url"}
    }
    assert "SALESMART_JWT_SECRET" not in env
    assert pod["volumes"] == [
        {"name": "pipeline-config", "configMap": {"name": "salesmart-migrate-config"}},
        {"name": "scratch", "emptyDir": {"sizeLimit": "64Mi"}},
    ]


def test_migration_retries_as_asked_even_none(render: Any) -> None:
    for asked in (0, 5):
        job = by_kind(render({"migration": {"backoffLimit": asked}}), "Job")["salesmart-migrate"]
        assert job["spec"]["backoffLimit"] == asked


def test_a_dotted_release_name_gives_valid_service_names(render: Any) -> None:
    services = knative_services(render(release="shop.eu")).values()
    assert {service["metadata"]["name"] for service in services} == {
        "shop-eu-salesmart-token",
        "shop-eu-salesmart-trends-bq",
        "shop-eu-salesmart-trends-pg",
        "shop-eu-salesmart-dashboard",
    }


# ---- overrides: -f files and --set, layered like helm's CLI ---------------------------------

TUNED_VALUES = """\
functions:
  trends_pg:
    containerConcurrency: 16
    timeoutSeconds: 20
    autoscaling:
      target: 12
      minScale: 1
      maxScale: 20
      scaleDownDelaySeconds: 600
  dashboard:
    visibility: cluster-local
"""


def test_values_file_and_set_flags_override_defaults(
    tmp_path: Path, default_objects: Objects, render: Any
) -> None:
    tuned = tmp_path / "tuned.yaml"
    tuned.write_text(TUNED_VALUES)
    values = user_values(
        [tuned],
        set_values=[
            "functions.trends_pg.autoscaling.maxScale=25",  # --set wins over -f
            "functions.token.autoscaling.maxScale=3,functions.token.workers=2",
            "functions.trends_bq.autoscaling.target=0.5",  # Helm passes decimals as strings
            "functions.trends_bq.autoscaling.metric=rps",
            "image.repository=registry.example.com/team/salesmart,image.tag=2024.1",
        ],
        set_string_values=["functions.token.env.LOG_LEVEL=debug"],
    )
    objects = render(values, namespace="analytics")
    services = knative_services(objects)
    defaults = knative_services(default_objects)

    pg = services["trends_pg"]
    assert {k: v for k, v in annotations_of(pg).items() if k.startswith("autoscaling.")} == {
        "autoscaling.knative.dev/class": "kpa.autoscaling.knative.dev",
        "autoscaling.knative.dev/metric": "concurrency",
        "autoscaling.knative.dev/target": "12",
        "autoscaling.knative.dev/min-scale": "1",
        "autoscaling.knative.dev/max-scale": "25",
        "autoscaling.knative.dev/initial-scale": "1",
        "autoscaling.knative.dev/scale-down-delay": "600s",
    }
    assert pg["spec"]["template"]["spec"]["containerConcurrency"] == 16
    assert env_of(pg)["THREADS"] == "17"
    assert env_of(pg)["CLOUD_RUN_TIMEOUT_SECONDS"] == "20"

    token = services["token"]
    assert annotations_of(token)["autoscaling.knative.dev/max-scale"] == "3"
    # Two workers share the eight requests: 4 threads each, and one for the probes.
    assert (env_of(token)["WORKERS"], env_of(token)["THREADS"]) == ("2", "5")
    assert env_of(token)["LOG_LEVEL"] == "debug"

    bq = annotations_of(services["trends_bq"])
    assert (bq["autoscaling.knative.dev/target"], bq["autoscaling.knative.dev/metric"]) == (
        "0.5",
        "rps",
    )
    assert (
        services["dashboard"]["metadata"]["labels"]["networking.knative.dev/visibility"]
        == "cluster-local"
    )
    for service in services.values():
        image = service["spec"]["template"]["spec"]["containers"][0]["image"]
        assert image == "registry.example.com/team/salesmart:2024.1"

    # Nothing else moved: the dashboard's spec and the other objects are as by default.
    assert (
        services["dashboard"]["spec"]["template"]["metadata"]
        == (defaults["dashboard"]["spec"]["template"]["metadata"])
    )
    assert identities(objects) == identities(default_objects)


def test_set_null_removes_a_default_annotation(render: Any) -> None:
    values = user_values(set_values=["functions.token.autoscaling.scaleDownDelaySeconds=null"])
    token = knative_services(render(values))["token"]
    assert "autoscaling.knative.dev/scale-down-delay" not in annotations_of(token)


def test_disabled_function_and_migration_are_not_rendered(render: Any) -> None:
    values = user_values(
        set_values=["functions.dashboard.enabled=false", "migration.enabled=false"]
    )
    objects = render(values)
    assert set(knative_services(objects)) == {"token", "trends_bq", "trends_pg"}
    assert by_kind(objects, "Job") == {}
    assert set(by_kind(objects, "ConfigMap")) == {"salesmart-config"}


def test_chart_created_secret(render: Any) -> None:
    values = {
        "secrets": {
            "existingSecret": "",
            "jwtSecret": "j" * 32,
            "piiKey": "p" * 40,
            "databaseUrl": "postgresql://app:database-password-of-32-bytes-00@db.internal:5432/salesmart",
        }
    }
    objects = render(values, release="shop")
    secrets = by_kind(objects, "Secret")
    assert set(secrets) == {"shop-salesmart-secrets", "shop-salesmart-migrate-secrets"}
    data = secrets["shop-salesmart-secrets"]["data"]
    assert {k: base64.b64decode(v).decode() for k, v in data.items()} == {
        "jwt-secret": "j" * 32,
        "pii-key": "p" * 40,
        "database-url": "postgresql://app:database-password-of-32-bytes-00@db.internal:5432/salesmart",
    }
    # The Job's copy holds only the database URL and is a hook created before the Job.
    hook = secrets["shop-salesmart-migrate-secrets"]
    assert set(hook["data"]) == {"database-url"}
    assert hook["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade,pre-rollback"
    # Kept when a later release names it as existingSecret (the default name is this one)
    # instead of creating it: Helm deleted the Secret every pod reads (an audit).
    assert secrets["shop-salesmart-secrets"]["metadata"]["annotations"] == {
        "helm.sh/resource-policy": "keep"
    }
    for service in knative_services(objects).values():
        assert env_of(service)["SALESMART_JWT_SECRET"]["secretKeyRef"]["name"] == (
            "shop-salesmart-secrets"
        )
    job_env = by_kind(objects, "Job")["shop-salesmart-migrate"]["spec"]["template"]["spec"][
        "containers"
    ][0]["env"]
    assert job_env[-1]["valueFrom"]["secretKeyRef"]["name"] == "shop-salesmart-migrate-secrets"


def _job_database_url(objects: Objects, job: str) -> dict[str, Any]:
    env = by_kind(objects, "Job")[job]["spec"]["template"]["spec"]["containers"][0]["env"]
    [url] = [item for item in env if item["name"] == "SALESMART_DATABASE_URL"]
    ref: dict[str, Any] = url["valueFrom"]["secretKeyRef"]
    return ref


def test_the_migration_job_may_use_a_database_role_of_its_own(render: Any) -> None:
    # Least privilege: the Job's URL names a role that may CREATE; the functions keep theirs.
    objects = render(
        {"secrets": {"existingSecret": "shop-db", "keys": {"migrationDatabaseUrl": "owner-url"}}}
    )
    assert _job_database_url(objects, "salesmart-migrate") == {
        "name": "shop-db",
        "key": "owner-url",
    }
    for service in knative_services(objects).values():
        if "SALESMART_DATABASE_URL" in env_of(service):
            assert env_of(service)["SALESMART_DATABASE_URL"]["secretKeyRef"]["key"] == (
                "database-url"
            )
    # Unset: one URL for both, as before.
    default = render({})
    assert _job_database_url(default, "salesmart-migrate")["key"] == "database-url"
    # The chart's own Secret: the Job's copy holds the migration URL.
    created = render(
        {
            "secrets": {
                "existingSecret": "",
                "jwtSecret": "j" * 32,
                "piiKey": "p" * 40,
                "databaseUrl": "postgresql://app:database-password-of-32-bytes-00@db/salesmart",
                "migrationDatabaseUrl": "postgresql://owner:database-password-of-32-bytes-00@db/salesmart",
            }
        }
    )
    secrets = by_kind(created, "Secret")
    decoded = {
        name: {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
        for name, secret in secrets.items()
    }
    assert decoded["salesmart-migrate-secrets"] == {
        "database-url": "postgresql://owner:database-password-of-32-bytes-00@db/salesmart"
    }
    # The main Secret keeps it too, for the Airflow tasks (the hook's copy is deleted).
    assert (
        decoded["salesmart-secrets"]["database-url"]
        == "postgresql://app:database-password-of-32-bytes-00@db/salesmart"
    )
    assert decoded["salesmart-secrets"]["migration-database-url"] == (
        "postgresql://owner:database-password-of-32-bytes-00@db/salesmart"
    )
    # A value the chart would not use is refused, not ignored.
    with pytest.raises(RenderError, match="used only when the chart creates the Secret"):
        render(
            {
                "secrets": {
                    "migrationDatabaseUrl": "postgresql://owner:database-password-of-32-bytes-00@db/salesmart"
                }
            }
        )


@pytest.mark.parametrize(
    "overrides",
    [
        # One key for the JWT and the PII secrets: one value would sign tokens and mask ids.
        "secrets: {keys: {piiKey: jwt-secret}}",
        # In a chart-created Secret, twice one key in its data: which value wins is the
        # YAML parser's choice (here, the functions could get the migration role's URL).
        "secrets: {existingSecret: '', jwtSecret: JWT, piiKey: PII, databaseUrl: 'postgresql://f@h/d',"
        " migrationDatabaseUrl: 'postgresql://m@h/d', keys: {migrationDatabaseUrl: database-url}}",
    ],
)
def test_secret_key_names_must_differ(overrides: str, render: Any) -> None:
    values = helm.values_from_yaml(
        overrides.replace("JWT", GOOD_SECRET).replace("PII", OTHER_SECRET)
    )
    with pytest.raises(RenderError, match=r"secrets\.keys name one Secret key twice"):
        render(values)


def test_each_function_and_the_job_may_run_as_its_own_service_account(render: Any) -> None:
    """With Workload Identity, the account that may read BigQuery was every function's and
    the migration Job's (an audit): each may have its own, else the top-level one."""
    objects = render(
        {
            "serviceAccountName": "salesmart-runtime",
            "functions": {"trends_bq": {"serviceAccountName": "salesmart-bigquery"}},
            "migration": {"serviceAccountName": "salesmart-migrate"},
        }
    )
    accounts = {
        name: service["spec"]["template"]["spec"]["serviceAccountName"]
        for name, service in knative_services(objects).items()
    }
    assert accounts == {
        "token": "salesmart-runtime",
        "trends_bq": "salesmart-bigquery",
        "trends_pg": "salesmart-runtime",
        "dashboard": "salesmart-runtime",
    }
    job = by_kind(objects, "Job")["salesmart-migrate"]["spec"]["template"]["spec"]
    assert job["serviceAccountName"] == "salesmart-migrate"
    only_bq = render({"functions": {"trends_bq": {"serviceAccountName": "salesmart-bigquery"}}})
    unset = [
        name
        for name, service in knative_services(only_bq).items()
        if "serviceAccountName" not in service["spec"]["template"]["spec"]
    ]
    assert sorted(unset) == ["dashboard", "token", "trends_pg"]


def test_one_value_for_both_keys_is_refused_when_rendered(render: Any) -> None:
    """The functions refuse it at start: the install succeeded (the migration Job needs
    neither key) and no Service became Ready (a review found it)."""
    secrets = {
        "existingSecret": "",
        "jwtSecret": GOOD_SECRET,
        "piiKey": GOOD_SECRET,
        "databaseUrl": "postgresql://u:database-password-of-32-bytes-00@h/d",
    }
    with pytest.raises(RenderError, match=r"secrets\.jwtSecret and secrets\.piiKey are the same"):
        render({"secrets": secrets})
    render({"secrets": {**secrets, "piiKey": GOOD_SECRET + "-other"}})


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("postgresql://u:p@h/d", "a password of only 1 bytes"),
        # Read as the functions read it: %XX escapes decoded, UTF-8 bytes counted.
        ("postgresql://u:" + "%41" * 31 + "@h/d", "a password of only 31 bytes"),
        ("postgresql://u:" + "é" * 15 + "@h/d", "a password of only 30 bytes"),
        ("postgresql://u@h/d", "no password"),
        ("postgresql://h/d?sslmode=require", "no password"),
        # libpq ends the user info at its first "@": the rest of the password is the host.
        ("postgresql://u:" + "p" * 32 + "@x@h/d", 'an "@" in its host or database name'),
        ("postgresql://u:" + "p" * 16 + "\t" + "p" * 16 + "@h/d", "a control character"),
        # The query begins after the user info: a "?" in the password hid a missing file.
        (
            "postgresql://u:a?b" + "p" * 32 + "@h/d?sslrootcert=/nowhere/ca.pem",
            "names sslrootcert=/nowhere/ca.pem, a file the pods do not have",
        ),
        # Escapes the chart cannot read as libpq does are refused, not misread.
        ("postgresql://u:" + "p" * 32 + "@h/d?%73slrootcert=/nowhere/ca.pem", "%-escapes"),
        ("postgresql://u:" + "p" * 32 + "@h/d?%70assword=short", "%-escapes"),
        (
            "postgresql://u:" + "p" * 32 + "@h/d?sslrootcert=/var/run/secrets/postgres/a%2Db",
            "%-escapes",
        ),
    ],
)
def test_a_chart_created_database_url_the_functions_would_refuse_is_refused(
    url: str, said: str, render: Any
) -> None:
    """The install succeeded and every pod failed to start (with the migration Job off;
    found by an operator audit)."""
    secrets = {
        "existingSecret": "",
        "jwtSecret": GOOD_SECRET,
        "piiKey": GOOD_SECRET + "-other",
        "databaseUrl": url,
    }
    values = {"secrets": secrets, "migration": {"enabled": False}}
    with pytest.raises(RenderError, match=rf"secrets\.databaseUrl(:| has | ).*{re.escape(said)}"):
        render(values)
    # The functions refuse it too (the chart reads the URL as they do).
    settings = Settings(env="prod", database_url=url)
    with pytest.raises(ConfigError):
        require_database(settings)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:" + "%41" * 32 + "@h/d",
        "postgresql://u:" + "é" * 16 + "@h/d",
        # White space around the URL is not its (a file's line end in a Secret).
        "postgresql://u:" + "p" * 32 + "@h/d\n",
        "postgresql://u:" + "p" * 32 + "@h/d?sslmode=verify-full&sslrootcert=system",
        "postgresql://u:" + "p" * 32 + "@h/d?sslmode=verify-ca&sslrootcert="
        "/var/run/secrets/postgres/server-ca.pem",
        # Read as libpq reads it (the chart read it as urlsplit did, a review found): "#"
        # and "?" are the password's, a password= in the query counts, "/" may be %2F, the
        # last of a repeated key wins.
        "postgresql://u:" + "p#?" * 11 + "@h/d",
        "postgresql://u@h/d?password=" + "p" * 32,
        "postgresql://u:" + "p" * 32 + "@h/d?sslmode=verify-ca&sslrootcert="
        "%2Fvar%2Frun%2Fsecrets%2Fpostgres%2Fserver-ca.pem",
        "postgresql://u:" + "p" * 32 + "@h/d?sslrootcert=/nowhere/ca.pem&sslrootcert=system",
        "  postgresql://u:" + "p" * 32 + "@h/d",  # white space around it, as the functions
    ],
)
def test_a_chart_created_database_url_the_functions_take_renders(url: str, render: Any) -> None:
    secrets = {
        "existingSecret": "",
        "jwtSecret": GOOD_SECRET,
        "piiKey": GOOD_SECRET + "-other",
        "databaseUrl": url,
    }
    tls = {"caSecret": "cloudsql-ca", "caKey": "server-ca.pem"}
    assert by_kind(render({"secrets": secrets, "postgresTls": tls}), "Secret")
    # The functions take its password too (their TLS files are the pod's: not checked here).
    params = parse_dsn(url)
    assert len(params.password.encode()) >= 32


@pytest.mark.parametrize(
    ("field", "query", "tls"),
    [
        # The chart mounts no client certificate: such a URL made every pod refuse to start.
        ("databaseUrl", "sslmode=verify-full&sslcert=/c/tls.crt&sslkey=/c/tls.key", {}),
        ("migrationDatabaseUrl", "sslkey=/c/tls.key", {}),
        # The CA certificate named but not mounted, or mounted under another key.
        ("databaseUrl", "sslmode=verify-ca&sslrootcert=/var/run/secrets/postgres/ca.crt", {}),
        (
            "databaseUrl",
            "sslmode=verify-ca&sslrootcert=/var/run/secrets/postgres/ca.crt",
            {"caSecret": "cloudsql-ca", "caKey": "server-ca.pem"},
        ),
    ],
)
def test_a_chart_created_database_url_naming_a_file_the_pods_lack_is_refused(
    field: str, query: str, tls: dict[str, str], render: Any
) -> None:
    secrets = {
        "existingSecret": "",
        "jwtSecret": GOOD_SECRET,
        "piiKey": GOOD_SECRET + "-other",
        "databaseUrl": "postgresql://u:" + "p" * 32 + "@h/d",
    }
    secrets[field] = "postgresql://u:" + "p" * 32 + "@h/d?" + query
    with pytest.raises(RenderError, match=rf"secrets\.{field} names ssl\w+=\S+, a file the pods"):
        render({"secrets": secrets, "postgresTls": tls})


def test_a_short_migration_password_is_refused_and_none_is_not(render: Any) -> None:
    """The migration Job refuses a short password, not a missing one (.pgpass, IAM)."""
    secrets = {
        "existingSecret": "",
        "jwtSecret": GOOD_SECRET,
        "piiKey": GOOD_SECRET + "-other",
        "databaseUrl": "postgresql://u:database-password-of-32-bytes-00@h/d",
    }
    with pytest.raises(RenderError, match="migrationDatabaseUrl has a password of only 5 bytes"):
        render({"secrets": {**secrets, "migrationDatabaseUrl": "postgresql://o:short@h/d"}})
    render({"secrets": {**secrets, "migrationDatabaseUrl": "postgresql://o@h/d"}})


@pytest.mark.parametrize("field", ["jwtSecret", "piiKey", "databaseUrl"])
def test_an_inline_secret_beside_an_existing_secret_is_refused(field: str, render: Any) -> None:
    """Before, it rendered: kept in the release, unused, while the pods read the Secret."""
    value = (
        "postgresql://u:database-password-of-32-bytes-00@h/d"
        if field == "databaseUrl"
        else GOOD_SECRET
    )
    values = {"secrets": {"existingSecret": "salesmart-secrets", field: value}}
    with pytest.raises(RenderError, match=rf"secrets\.{field} is used only when the chart"):
        render(values)


def test_a_longer_timeout_reaches_the_servers_deadline(render: Any) -> None:
    values = helm.values_from_yaml("functions: {trends_bq: {timeoutSeconds: 300}}")
    service = knative_services(render(values))["trends_bq"]
    assert service["spec"]["template"]["spec"]["timeoutSeconds"] == 300
    assert env_of(service)["SALESMART_REQUEST_DEADLINE_SECONDS"] == "300"


def test_an_existing_secret_may_give_the_migration_job_the_functions_url(render: Any) -> None:
    # Naming the databaseUrl key (the default meaning of an empty key) is no clash.
    values = helm.values_from_yaml("secrets: {keys: {migrationDatabaseUrl: database-url}}")
    assert by_kind(render(values), "Job")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            "functions: {dashboard: {resources: {requests: {memory: 1Gi}}}}",  # limit 384Mi
            r"functions\.dashboard\.resources: requests\.memory \(1Gi\) exceeds limits\.memory",
        ),
        (
            "functions: {token: {resources: {requests: {cpu: 1.5}, limits: {cpu: 1200m}}}}",
            r"functions\.token\.resources: requests\.cpu \(1\.5\) exceeds limits\.cpu \(1200m\)",
        ),
        (
            "migration: {resources: {requests: {memory: 600M}, limits: {memory: 512Mi}}}",
            r"migration\.resources: requests\.memory \(600M\) exceeds limits\.memory \(512Mi\)",
        ),
    ],
)
def test_a_request_above_its_limit_is_refused(overrides: str, message: str, render: Any) -> None:
    with pytest.raises(RenderError, match=message):
        render(helm.values_from_yaml(overrides))


def test_requests_up_to_their_limits_render(render: Any) -> None:
    values = helm.values_from_yaml(
        "functions: {token: {resources: {requests: {cpu: 1, memory: 536870912},"
        " limits: {cpu: 1000m, memory: 512Mi}}}}\n"
        "migration: {resources: {requests: {memory: 500M}, limits: {memory: 512Mi}}}"
    )
    token = knative_services(render(values))["token"]
    limits = token["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits == {"cpu": "1000m", "memory": "512Mi"}


def test_a_change_to_the_chart_created_secret_rolls_out_new_revisions(render: Any) -> None:
    # Secrets reach the pods as env: only a new revision sees a new value, so every pod of
    # a revision verifies tokens with the same key.
    def secret_sums(jwt_secret: str) -> set[str]:
        values = {
            "secrets": {
                "existingSecret": "",
                "jwtSecret": jwt_secret,
                "piiKey": "p" * 40,
                "databaseUrl": "postgresql://app:database-password-of-32-bytes-00@db.internal:5432/salesmart",
            }
        }
        services = knative_services(render(values)).values()
        return {annotations_of(service)["checksum/secrets"] for service in services}

    first, again, rotated = secret_sums("j" * 32), secret_sums("j" * 32), secret_sums("k" * 32)
    assert len(first) == 1
    assert first == again
    assert first != rotated
    # A Secret the chart does not own: nothing of it is known at render time, so an
    # upgrade after changing it rolled nothing out; the operator's rotation text does.
    for service in knative_services(render()).values():
        assert "checksum/secrets" not in annotations_of(service)

    def rotation_sums(rotation: str | int) -> set[str]:
        services = knative_services(render({"secrets": {"rotation": rotation}})).values()
        return {annotations_of(service)["checksum/secrets"] for service in services}

    first, again, rotated = (
        rotation_sums("2026-11-29"),
        rotation_sums("2026-11-29"),
        rotation_sums("2"),
    )
    assert len(first) == len(rotated) == 1
    assert first == again != rotated
    # --set secrets.rotation=$(date +%Y%m%d%H%M) passes a number.
    assert len(rotation_sums(202611291430) | rotation_sums(202611291431)) == 2
    assert len(rotation_sums(0) | rotation_sums(1)) == 2  # 0 is a value too


def test_the_migration_image_follows_the_serving_image_tag(render: Any) -> None:
    def images(*set_values: str) -> tuple[set[str], str]:
        objects = render(user_values(set_values=list(set_values)))
        services = knative_services(objects).values()
        job = by_kind(objects, "Job")["salesmart-migrate"]
        return (
            {s["spec"]["template"]["spec"]["containers"][0]["image"] for s in services},
            job["spec"]["template"]["spec"]["containers"][0]["image"],
        )

    # The README's upgrade: one --set image.tag moves the schema and the code together.
    assert images("image.tag=0.2.0") == ({"salesmart:0.2.0"}, "salesmart-cli:0.2.0")
    assert images() == ({"salesmart:0.1.0"}, "salesmart-cli:0.1.0")  # appVersion
    assert images("image.tag=0.2.0", "migration.image.tag=0.2.1")[1] == "salesmart-cli:0.2.1"
    # Digests pin each image on its own (two images, two digests).
    serving, cli = "sha256:" + "ab" * 32, "sha256:" + "cd" * 32
    pinned = images("image.tag=0.2.0", f"image.digest={serving}", f"migration.image.digest={cli}")
    assert pinned == ({f"salesmart:0.2.0@{serving}"}, f"salesmart-cli:0.2.0@{cli}")


def test_a_release_name_that_cannot_name_a_knative_service_is_refused(render: Any) -> None:
    with pytest.raises(RenderError, match=r'release name "1st" must start with a lowercase letter'):
        render(release="1st")
    # fullnameOverride names the objects instead.
    services = knative_services(render({"fullnameOverride": "shop"}, release="1st")).values()
    assert {s["metadata"]["name"] for s in services} >= {"shop-token", "shop-dashboard"}


def test_env_numbers_and_booleans_are_passed_as_text(render: Any) -> None:
    # helm --set types 600 as a number; the variable still gets its text.
    values = user_values(
        set_values=["functions.token.env.SALESMART_TOKEN_TTL_SECONDS=600"],
    )
    values["functions"]["token"]["env"]["SALESMART_DEBUG_SQL"] = False
    env = env_of(knative_services(render(values))["token"])
    assert env["SALESMART_TOKEN_TTL_SECONDS"] == "600"
    assert env["SALESMART_DEBUG_SQL"] == "false"


def test_env_numbers_of_a_values_file_keep_their_digits(render: Any, tmp_path: Path) -> None:
    # Helm reads every number of a values file as a float: printed as such, 10000000000
    # became "1e+10", which the function refuses as an integer (its revision crash-looped).
    values_file = tmp_path / "env.yaml"
    values_file.write_text(
        "functions:\n"
        "  trends_bq:\n"
        "    env: {SALESMART_BQ_MAX_BYTES_BILLED: 10000000000, A_MILLION: 1234567,\n"
        "          A_FRACTION: 2.5, A_SMALL: 600, A_ZERO: 0, A_TEXT: '1e+10', A_FLAG: true,\n"
        "          A_BIG_FRACTION: 12345678.5, A_NEGATIVE: -42, A_LARGEST: 9007199254740991}\n"
    )
    env = env_of(knative_services(render(user_values([values_file])))["trends_bq"])
    assert {key: env[key] for key in env if key.startswith(("A_", "SALESMART_BQ_MAX"))} == {
        "SALESMART_BQ_MAX_BYTES_BILLED": "10000000000",
        "A_MILLION": "1234567",
        "A_FRACTION": "2.5",
        "A_SMALL": "600",
        "A_ZERO": "0",
        "A_TEXT": "1e+10",
        "A_FLAG": "true",
        "A_BIG_FRACTION": "12345678.5",
        "A_NEGATIVE": "-42",
        "A_LARGEST": "9007199254740991",
    }
    # Past 2**53 a float has lost digits before the chart sees it: refused, not rounded.
    for number in ("9007199254740993", "-9007199254740993", "1e20"):
        values_file.write_text(f"functions:\n  token:\n    env: {{BIG: {number}}}\n")
        with pytest.raises(RenderError, match=r"functions\.token\.env\.BIG: .*; quote it"):
            render(user_values([values_file]))
    # Quoted, it keeps every digit.
    values_file.write_text("functions:\n  token:\n    env: {BIG: '9007199254740993'}\n")
    assert env_of(knative_services(render(user_values([values_file])))["token"])["BIG"] == (
        "9007199254740993"
    )


def test_bigquery_credentials_are_mounted_for_trends_bq_only(render: Any) -> None:
    values = user_values(set_values=["bigquery.credentialsSecret=bq-sa,bigquery.project=acme-dw"])
    services = knative_services(render(values))
    bq = services["trends_bq"]
    env = env_of(bq)
    assert env["GOOGLE_APPLICATION_CREDENTIALS"] == "/var/run/secrets/google/credentials.json"
    assert env["SALESMART_BQ_PROJECT"] == "acme-dw"
    spec = bq["spec"]["template"]["spec"]
    assert {
        "name": "google-credentials",
        "secret": {
            "secretName": "bq-sa",
            "items": [{"key": "credentials.json", "path": "credentials.json"}],
        },
    } in spec["volumes"]
    for name in ("token", "trends_pg", "dashboard"):
        assert "GOOGLE_APPLICATION_CREDENTIALS" not in env_of(services[name])
        assert len(services[name]["spec"]["template"]["spec"]["volumes"]) == 1


def test_the_postgresql_ca_certificate_is_mounted_where_the_url_can_name_it(
    render: Any, default_objects: Objects
) -> None:
    """verify-ca against a private CA (Cloud SQL's) needs its certificate in the pod: the
    chart had no way to mount one (found by an operator audit)."""
    for obj in default_objects:
        assert "postgres-ca" not in json.dumps(obj)
    objects = render({"postgresTls": {"caSecret": "cloudsql-ca", "caKey": "server-ca.pem"}})
    services = knative_services(objects)
    pods = {name: service["spec"]["template"]["spec"] for name, service in services.items()}
    pods["migrate"] = by_kind(objects, "Job")["salesmart-migrate"]["spec"]["template"]["spec"]
    for name, pod in pods.items():
        mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        if name == "trends_bq":  # no PostgreSQL there
            assert "postgres-ca" not in mounts and "postgres-ca" not in volumes
            continue
        assert mounts["postgres-ca"] == {
            "name": "postgres-ca",
            "mountPath": "/var/run/secrets/postgres",
            "readOnly": True,
        }
        assert volumes["postgres-ca"]["secret"] == {
            "secretName": "cloudsql-ca",
            "items": [{"key": "server-ca.pem", "path": "server-ca.pem"}],
        }
    with pytest.raises(RenderError, match="caSecret"):
        render({"postgresTls": {"caSecret": "Not_A_Name"}})


def test_pipeline_config_override_rolls_out_new_revisions(
    render: Any, default_objects: Objects
) -> None:
    config = "ingestion:\n  validation:\n    min_price: 5.0\n"
    objects = render({"pipelineConfig": config})
    assert (
        by_kind(objects, "ConfigMap")["salesmart-config"]["data"]["pipeline_config.yaml"].strip()
        == config.strip()
    )
    new = annotations_of(knative_services(objects)["token"])["checksum/pipeline-config"]
    old = annotations_of(knative_services(default_objects)["token"])["checksum/pipeline-config"]
    assert new != old


def _trends_bq_settings(objects: Objects, tmp_path: Path) -> Any:
    """trends_bq's settings as its pod builds them: the rendered env (literal values) over
    the mounted pipeline configuration."""
    from common.config import build_settings

    config = tmp_path / "pipeline_config.yaml"
    config.write_text(
        by_kind(objects, "ConfigMap")["salesmart-config"]["data"]["pipeline_config.yaml"]
    )
    env = env_of(knative_services(objects)["trends_bq"])
    literal = {k: v for k, v in env.items() if isinstance(v, str)}
    return build_settings({**literal, "SALESMART_ENV": "dev", "SALESMART_CONFIG": str(config)})


def test_the_bigquery_location_is_the_pipeline_configs_unless_set(
    render: Any, tmp_path: Path
) -> None:
    """The chart's default location deferred to nothing: US overrode an EU configuration
    (found by an operator audit)."""
    source = (CHART_DIR / "files" / "pipeline_config.yaml").read_text()
    assert "  location: US\n" in source
    eu = source.replace("  location: US\n", "  location: EU\n")
    objects = render({"pipelineConfig": eu})
    assert "SALESMART_BQ_LOCATION" not in env_of(knative_services(objects)["trends_bq"])
    assert _trends_bq_settings(objects, tmp_path).bigquery.location == "EU"
    objects = render({"pipelineConfig": eu, "bigquery": {"location": "asia-northeast1"}})
    assert _trends_bq_settings(objects, tmp_path).bigquery.location == "asia-northeast1"
    assert _trends_bq_settings(render({}), tmp_path).bigquery.location == "US"


@pytest.mark.parametrize(
    ("broken", "said"),
    [
        ("ingestion: [\n", "could not be parsed"),
        ("- a list\n- not a mapping\n", "could not be parsed"),
        ("null\n", "is empty or not a YAML mapping"),
        ("# only a comment\n", "is empty or not a YAML mapping"),
    ],
)
def test_a_pipeline_config_that_is_not_a_yaml_mapping_is_refused(
    broken: str, said: str, render: Any
) -> None:
    # Rendered as it was, it failed only later: in the migration hook, or as new revisions
    # crash-looping when the Job is off.
    with pytest.raises(RenderError, match=f"pipelineConfig {said}"):
        render({"pipelineConfig": broken})


def test_a_pipeline_config_with_an_error_setting_is_not_taken_for_a_parse_error(
    render: Any,
) -> None:
    config = "Error: see the runbook\ningestion:\n  validation:\n    min_price: 5\n"
    objects = render({"pipelineConfig": config})
    mounted = by_kind(objects, "ConfigMap")["salesmart-config"]["data"]["pipeline_config.yaml"]
    assert mounted.strip() == config.strip()


def test_unlimited_concurrency_needs_explicit_threads(render: Any) -> None:
    values = user_values(set_values=["functions.trends_pg.containerConcurrency=0"])
    with pytest.raises(RenderError, match=r"functions\.trends_pg: containerConcurrency 0"):
        render(values)
    values = user_values(
        set_values=["functions.trends_pg.containerConcurrency=0", "functions.trends_pg.threads=32"]
    )
    env = env_of(knative_services(render(values))["trends_pg"])
    assert env["THREADS"] == "32"


def test_readiness_timeout_and_threshold_need_a_readiness_period(render: Any) -> None:
    refused = "functions: {token: {probes: {readiness: {failureThreshold: 5}}}}"
    with pytest.raises(
        RenderError,
        match=r"functions\.token\.probes\.readiness: timeoutSeconds and failureThreshold need "
        r"periodSeconds of 1 or more",
    ):
        render(helm.values_from_yaml(refused))
    values = helm.values_from_yaml(
        "functions: {token: {probes: {readiness: "
        "{periodSeconds: 5, timeoutSeconds: 2, failureThreshold: 4}}}}"
    )
    service = knative_services(render(values))["token"]
    assert service["spec"]["template"]["spec"]["containers"][0]["readinessProbe"] == {
        "httpGet": {"path": "/healthz"},
        "periodSeconds": 5,
        "timeoutSeconds": 2,
        "failureThreshold": 4,
    }
    assert knative_rules.violations(service) == []


# ---- values.schema.json -------------------------------------------------------------------

BAD_VALUES: list[tuple[str, str]] = [
    ("a function's account not a name", "functions: {trends_bq: {serviceAccountName: BQ_Reader}}"),
    ("the job's account not a name", "migration: {serviceAccountName: 'a b'}"),
    ("string concurrency", 'functions: {token: {containerConcurrency: "8"}}'),
    ("concurrency above 1000", "functions: {token: {containerConcurrency: 1001}}"),
    ("negative concurrency", "functions: {token: {containerConcurrency: -1}}"),
    ("negative min scale", "functions: {token: {autoscaling: {minScale: -1}}}"),
    ("negative max scale", "functions: {trends_pg: {autoscaling: {maxScale: -2}}}"),
    ("string min scale", 'functions: {token: {autoscaling: {minScale: "1"}}}'),
    ("unknown top-level key", "replicas: 3"),
    ("unknown function key", "functions: {token: {minScale: 1}}"),
    ("unknown autoscaling key", "functions: {token: {autoscaling: {maxReplicas: 3}}}"),
    ("unknown function", "functions: {reports: {enabled: true}}"),
    ("cpu metric with the KPA class", "functions: {token: {autoscaling: {metric: cpu}}}"),
    (
        "concurrency metric with the HPA class",
        "functions: {token: {autoscaling: {class: hpa.autoscaling.knative.dev, minScale: 1}}}",
    ),
    (
        "HPA scaling to zero",
        "functions: {token: {autoscaling: {class: hpa.autoscaling.knative.dev, metric: cpu}}}",
    ),
    ("unknown autoscaler class", "functions: {token: {autoscaling: {class: keda}}}"),
    ("timeout above 600", "functions: {dashboard: {timeoutSeconds: 601}}"),
    ("zero timeout", "functions: {dashboard: {timeoutSeconds: 0}}"),
    ("zero target", "functions: {token: {autoscaling: {target: 0}}}"),
    ("non-numeric target", "functions: {token: {autoscaling: {target: lots}}}"),
    # --set passes decimals as text: below Knative's 0.01 is refused as text too.
    ("target text below 0.01", "functions: {token: {autoscaling: {target: '0.009'}}}"),
    (
        "scale-down delay above an hour",
        "functions: {token: {autoscaling: {scaleDownDelaySeconds: 3601}}}",
    ),
    ("string scale-down delay", "functions: {token: {autoscaling: {scaleDownDelaySeconds: 5m}}}"),
    ("zero workers", "functions: {token: {workers: 0}}"),
    ("unknown visibility", "functions: {token: {visibility: public}}"),
    ("relative probe path", "functions: {token: {probes: {path: healthz}}}"),
    # Its main path answers 405 (token) or 401: the revision would never be Ready.
    ("probe on the main path", "functions: {token: {probes: {path: /token}}}"),
    ("liveness period zero", "functions: {token: {probes: {liveness: {periodSeconds: 0}}}}"),
    ("unknown probe key", "functions: {token: {probes: {readiness: {httpGet: {}}}}}"),
    ("list env value", "functions: {token: {env: {DEBUG: [1]}}}"),
    ("bad cpu quantity", "functions: {token: {resources: {requests: {cpu: lots}}}}"),
    ("unknown resource", "functions: {token: {resources: {requests: {gpu: 1}}}}"),
    ("unknown environment", "environment: staging"),
    # dev relaxes the secrets and drops Secure cookies: the local run's only.
    ("dev environment", "environment: dev"),
    ("max scale beyond int32", "functions: {token: {autoscaling: {maxScale: 3000000000}}}"),
    ("min scale beyond int32", "functions: {token: {autoscaling: {minScale: 2147483648}}}"),
    ("digest that is not sha256", "image: {digest: 'md5:0123'}"),
    ("digest in the tag", "image: {tag: 'sha256:abc'}"),
    ("bad pull policy", "image: {pullPolicy: Sometimes}"),
    ("empty image repository", "image: {repository: ''}"),
    # Runtimes cannot parse an upper-case path ("repository name must be lowercase").
    ("upper-case image path", "image: {repository: Registry.Example.com/You/Salesmart}"),
    ("chart-created secret without values", "secrets: {existingSecret: ''}"),
    (
        "short JWT secret",
        "secrets: {existingSecret: '', jwtSecret: short, piiKey: "
        + GOOD_SECRET
        + ", databaseUrl: 'postgresql://u:database-password-of-32-bytes-00@h/d'}",
    ),
    (
        "database URL that is not PostgreSQL",
        "secrets: {existingSecret: '', jwtSecret: "
        + GOOD_SECRET
        + ", piiKey: "
        + OTHER_SECRET
        + ", databaseUrl: 'mysql://u:database-password-of-32-bytes-00@h/d'}",
    ),
    ("migration URL that is not PostgreSQL", "secrets: {migrationDatabaseUrl: 'mysql://h/d'}"),
    ("bad migration URL key", "secrets: {keys: {migrationDatabaseUrl: 'a key'}}"),
    ("privileged container", "containerSecurityContext: {privileged: true}"),
    # Accepted by the API server, then never started by the kubelet or the runtime.
    ("root beside runAsNonRoot", "containerSecurityContext: {runAsUser: 0}"),
    (
        "Localhost seccomp without a profile",
        "containerSecurityContext: {seccompProfile: {type: Localhost}}",
    ),
    (
        "seccomp profile without Localhost",
        "containerSecurityContext: {seccompProfile: {type: RuntimeDefault, localhostProfile: a}}",
    ),
    ("env name with a hyphen", "functions: {token: {env: {LOG-LEVEL: debug}}}"),
    ("migration with unknown key", "migration: {schedule: daily}"),
    ("bad secret name", "secrets: {existingSecret: Not_A_Name}"),
    ("upper-case full name", "fullnameOverride: Shop"),
    ("dotted name", "nameOverride: sales.mart"),
]


# What each rejection must name, so a case cannot pass for an unrelated reason.
REASONS = {
    "string concurrency": "'/functions/token/containerConcurrency': got string",
    "concurrency above 1000": "'/functions/token/containerConcurrency': maximum",
    "negative concurrency": "'/functions/token/containerConcurrency': minimum",
    "negative min scale": "'/functions/token/autoscaling/minScale': minimum",
    "negative max scale": "'/functions/trends_pg/autoscaling/maxScale': minimum",
    "string min scale": "'/functions/token/autoscaling/minScale': got string",
    "unknown top-level key": "additional properties 'replicas'",
    "unknown function key": "additional properties 'minScale'",
    "unknown autoscaling key": "additional properties 'maxReplicas'",
    "unknown function": "additional properties 'reports'",
    "cpu metric with the KPA class": "metric': value must be one of 'concurrency', 'rps'",
    "concurrency metric with the HPA class": "metric': value must be one of 'cpu', 'memory'",
    "HPA scaling to zero": "'/functions/token/autoscaling/minScale': minimum: got 0, want 1",
    "unknown autoscaler class": "'/functions/token/autoscaling/class'",
    "timeout above 600": "'/functions/dashboard/timeoutSeconds': maximum",
    "zero timeout": "'/functions/dashboard/timeoutSeconds': minimum",
    "zero target": "'/functions/token/autoscaling/target'",
    "non-numeric target": "'/functions/token/autoscaling/target'",
    "target text below 0.01": "'/functions/token/autoscaling/target'",
    "scale-down delay above an hour": "autoscaling/scaleDownDelaySeconds': maximum",
    "string scale-down delay": "'/functions/token/autoscaling/scaleDownDelaySeconds': got string",
    "zero workers": "'/functions/token/workers': minimum",
    "unknown visibility": "'/functions/token/visibility'",
    "relative probe path": "'/functions/token/probes/path'",
    "probe on the main path": "'/functions/token/probes/path': value must be '/healthz'",
    "liveness period zero": "'/functions/token/probes/liveness/periodSeconds': minimum",
    "unknown probe key": "additional properties 'httpGet'",
    "list env value": "'/functions/token/env/DEBUG': got array",
    "bad cpu quantity": "'/functions/token/resources/requests/cpu'",
    "unknown resource": "additional properties 'gpu'",
    "unknown environment": "'/environment'",
    "dev environment": "'/environment'",
    # Knative reads scales as 32-bit integers.
    "max scale beyond int32": "'/functions/token/autoscaling/maxScale': maximum",
    "min scale beyond int32": "'/functions/token/autoscaling/minScale': maximum",
    "digest that is not sha256": "'/image/digest'",
    "digest in the tag": "'/image/tag'",
    "bad pull policy": "'/image/pullPolicy'",
    "empty image repository": "'/image/repository'",
    "upper-case image path": "'/image/repository'",
    "chart-created secret without values": "'/secrets/jwtSecret': minLength",
    "short JWT secret": "'/secrets/jwtSecret': minLength: got 5",
    "database URL that is not PostgreSQL": "'/secrets/databaseUrl'",
    "migration URL that is not PostgreSQL": "'/secrets/migrationDatabaseUrl'",
    "bad migration URL key": "'/secrets/keys/migrationDatabaseUrl'",
    "privileged container": "additional properties 'privileged'",
    "root beside runAsNonRoot": "'/containerSecurityContext/runAsUser': minimum: got 0, want 1",
    "Localhost seccomp without a profile": "missing property 'localhostProfile'",
    "seccomp profile without Localhost": "'/containerSecurityContext/seccompProfile': 'not'",
    "env name with a hyphen": "'/functions/token/env': additional properties 'LOG-LEVEL'",
    "migration with unknown key": "additional properties 'schedule'",
    "bad secret name": "'/secrets/existingSecret'",
    "upper-case full name": "'/fullnameOverride'",
    "a function's account not a name": "'/functions/trends_bq/serviceAccountName'",
    "the job's account not a name": "'/migration/serviceAccountName'",
    "dotted name": "'/nameOverride'",
}


@pytest.mark.parametrize(("case", "overrides"), BAD_VALUES, ids=[c for c, _ in BAD_VALUES])
def test_schema_rejects_bad_values(case: str, overrides: str) -> None:
    values = helm.values_from_yaml(overrides)
    with helm.Chart.load(CHART_DIR) as chart:
        with pytest.raises(helm.HelmValuesError) as rejected:
            chart.validate_schema(chart.merge_values(values))
        assert REASONS[case] in str(rejected.value)
        # An install (helm template / install) refuses them too.
        with pytest.raises(helm.HelmValuesError):
            chart.render(values, name="salesmart", namespace="default")


GOOD_VALUES = [
    "functions: {token: {autoscaling: {class: hpa.autoscaling.knative.dev, metric: cpu, "
    "target: 70, minScale: 1}}}",
    "functions: {token: {autoscaling: {metric: rps, target: 150.5}}}",
    # As --set passes them: text, any number of decimals from Knative's minimum 0.01 up.
    "functions: {token: {autoscaling: {target: '0.015'}}}",
    "functions: {token: {autoscaling: {target: '0.01'}}}",
    "functions: {token: {autoscaling: {target: '0.5'}}}",
    "functions: {trends_pg: {autoscaling: {minScale: 2, maxScale: 0}}}",  # 0 = unlimited
    "functions: {token: {containerConcurrency: 1000, timeoutSeconds: 600}}",
    "functions: {token: {env: {LOG_LEVEL: debug}, threads: 5, workers: 2}}",
    "functions: {token: {resources: {limits: {cpu: 1.5, memory: 1Gi}, requests: {cpu: 500m}}}}",
    "domain: apps.example.com",
    "image: {digest: 'sha256:abababababababababababababababababababababababababababababababab'}",
    "functions: {token: {autoscaling: {maxScale: 2147483647}}}",
    "imagePullSecrets: [{name: regcred}]",
    "containerSecurityContext: {runAsNonRoot: false, runAsUser: 0}",
    "containerSecurityContext: {seccompProfile: {type: Localhost, localhostProfile: p/a.json}}",
    "functions: {token: {env: {_PRIVATE_2: x}}}",
    "serviceAccountName: salesmart-runtime",
    "{allowZeroInitialScale: true, functions: {token: {autoscaling: {initialScale: 0}}}}",
    # An upper-case first component is a registry host to image references.
    "image: {repository: MyRegistry/salesmart}",
    "image: {repository: us-docker.pkg.dev/acme/apps/salesmart}",
    "image: {repository: 127.0.0.1:5000/team/sales__mart}",
]


@pytest.mark.parametrize("overrides", GOOD_VALUES)
def test_schema_accepts_good_values(overrides: str) -> None:
    values = helm.values_from_yaml(overrides)
    with helm.Chart.load(CHART_DIR) as chart:
        chart.validate_schema(chart.merge_values(values))
        chart.render(values, name="salesmart", namespace="default")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            "functions: {token: {autoscaling: {minScale: 5, maxScale: 2}}}",
            r"functions\.token\.autoscaling: minScale \(5\) must not exceed maxScale \(2\)",
        ),
        (
            "functions: {trends_bq: {autoscaling: {initialScale: 4, maxScale: 3}}}",
            r"functions\.trends_bq\.autoscaling: initialScale \(4\) must not exceed maxScale \(3\)",
        ),
        (
            "functions: {token: {autoscaling: {target: 20}}}",  # containerConcurrency 8
            r"functions\.token\.autoscaling: target \(20\) must not exceed containerConcurrency",
        ),
        (
            "functions: {trends_pg: {workers: 9}}",
            r"functions\.trends_pg: workers \(9\) must not exceed containerConcurrency \(8\)",
        ),
        (
            "functions: {trends_pg: {workers: 2, threads: 3}}",
            r"functions\.trends_pg: workers x threads \(6\) must exceed containerConcurrency",
        ),
        (
            # As many threads as requests: none left for the probes.
            "functions: {trends_pg: {workers: 2, threads: 4}}",
            r"functions\.trends_pg: workers x threads \(8\) must exceed containerConcurrency \(8\)",
        ),
        (
            # Unlimited, aimed at 6 requests a pod with 4 threads: none left for the probes.
            "functions: {trends_pg: {containerConcurrency: 0, threads: 4}}",
            r"functions\.trends_pg\.autoscaling: target \(6\) must be below workers x threads"
            r" \(4\) when containerConcurrency is 0",
        ),
        # Knative's webhook refuses 0 unless the cluster sets allow-zero-initial-scale.
        (
            "functions: {token: {autoscaling: {initialScale: 0}}}",
            r"functions\.token\.autoscaling: initialScale 0 needs the cluster's allow-zero",
        ),
        # Variables Knative or the chart sets: named with the function, and why.
        (
            "functions: {token: {env: {PORT: '9000'}}}",
            r"functions\.token\.env\.PORT: Knative sets this variable itself",
        ),
        (
            "functions: {dashboard: {env: {HOST: 127.0.0.1}}}",  # the listen address
            r"functions\.dashboard\.env\.HOST: the image listens on every address \(0\.0\.0\.0\)",
        ),
        (
            "functions: {token: {env: {FUNCTION_SOURCE: x.py}}}",  # another function's code
            r"functions\.token\.env\.FUNCTION_SOURCE: the chart sets",
        ),
        (
            "functions: {token: {env: {THREADS: '64'}}}",
            r"functions\.token\.env\.THREADS: the chart sets .* \(workers, threads, ",
        ),
    ],
)
def test_templates_refuse_crossed_scale_bounds(overrides: str, message: str, render: Any) -> None:
    values = helm.values_from_yaml(overrides)
    with helm.Chart.load(CHART_DIR) as chart:
        chart.validate_schema(chart.merge_values(values))  # the schema cannot see it ...
    with pytest.raises(RenderError, match=message):  # ... the templates can
        render(values)


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = SCHEMA
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def _leaf_paths(value: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    if isinstance(value, dict) and value:
        return [p for key, child in value.items() for p in _leaf_paths(child, (*path, key))]
    return [path]


def _schema_at(path: tuple[str, ...]) -> dict[str, Any]:
    """The schema node describing the value at ``path``; fails where none does."""
    node = _resolve(SCHEMA)
    for depth, key in enumerate(path):
        where = ".".join(path[: depth + 1])
        if key in node.get("properties", {}):
            node = _resolve(node["properties"][key])
        else:
            extra = node.get("additionalProperties")
            assert isinstance(extra, dict), f"{where} is not described by the schema"
            node = _resolve(extra)
    return node


def _closed(node: dict[str, Any], where: str, open_maps: set[str]) -> list[str]:
    """Object schemas under ``node`` that accept unknown keys (outside ``open_maps``)."""
    node = _resolve(node)
    problems = []
    is_object = node.get("type") == "object" and where not in open_maps
    if is_object and node.get("additionalProperties") is not False:
        problems.append(where)
    for key, child in node.get("properties", {}).items():
        problems += _closed(child, f"{where}.{key}".lstrip("."), open_maps)
    return problems


def test_schema_covers_every_default_value_and_closes_every_object() -> None:
    for path in _leaf_paths(DEFAULTS):
        node = _schema_at(path)
        assert node.get("type") or node.get("oneOf"), f"{'.'.join(path)} has no type"
    # Maps of user-chosen names (environment variables) are the only open objects.
    open_maps = {f"functions.{name}.env" for name in FUNCTIONS}
    assert _closed(SCHEMA, "", open_maps) == []


def test_defaults_pass_the_schema_and_every_function_has_the_same_knobs() -> None:
    with helm.Chart.load(CHART_DIR) as chart:
        chart.validate_schema(chart.merge_values({}))
    shapes = {name: set(_leaf_paths(DEFAULTS["functions"][name])) for name in FUNCTIONS}
    assert len({frozenset(shape) for shape in shapes.values()}) == 1, shapes


def test_env_refuses_every_variable_the_chart_sets(default_objects: Objects, render: Any) -> None:
    # Extra env may not shadow a variable the chart sets through a dedicated value.
    values = {
        "secrets": {
            "existingSecret": "",
            "jwtSecret": GOOD_SECRET,
            "piiKey": OTHER_SECRET,
            "databaseUrl": "postgresql://u:database-password-of-32-bytes-00@h/d",
        },
        "bigquery": {"credentialsSecret": "sa", "project": "acme-dw"},
    }
    chart_set: set[str] = set()
    for objects in (default_objects, render(values)):
        for service in knative_services(objects).values():
            chart_set |= set(env_of(service))
    assert {"SALESMART_ENV", "THREADS", "SALESMART_DATABASE_URL"} <= chart_set
    for name in sorted(chart_set):
        with pytest.raises(RenderError, match=rf"functions\.trends_pg\.env\.{name}: "):
            render({"functions": {"trends_pg": {"env": {name: "x"}}}})
    # A secret's file form: the variable the chart sets wins, the file was never read.
    for name in ("SALESMART_JWT_SECRET", "SALESMART_PII_KEY", "SALESMART_DATABASE_URL"):
        with pytest.raises(RenderError, match=rf"env\.{name}_FILE: the chart sets {name} from"):
            render({"functions": {"token": {"env": {f"{name}_FILE": "/run/key"}}}})


# ---- NOTES.txt ----------------------------------------------------------------------------


def test_notes_print_every_function_url() -> None:
    notes = render_notes(namespace="shop")
    for service, path in (
        ("salesmart-token", "/token"),
        ("salesmart-trends-bq", "/sales/trends"),
        ("salesmart-trends-pg", "/sales/pg-trends"),
        ("salesmart-dashboard", "/"),
    ):
        assert f"$(kubectl get ksvc {service} -n shop -o jsonpath='{{.status.url}}'){path}" in notes
    notes = render_notes(
        {"domain": "apps.example.com", "functions": {"trends_pg": {"visibility": "cluster-local"}}},
        namespace="shop",
    )
    assert "http://salesmart-token.shop.apps.example.com/token" in notes
    assert "http://salesmart-dashboard.shop.apps.example.com/" in notes
    assert "http://salesmart-trends-pg.shop.svc.cluster.local/sales/pg-trends" in notes
    assert "job/salesmart-migrate" in notes
    # Its session cookie is Secure: a browser following the http:// link would not log in.
    https_only = "browsers log in over https only"
    assert https_only in notes
    assert https_only not in render_notes({"functions": {"dashboard": {"enabled": False}}})


@pytest.mark.parametrize(
    ("release", "config_map"),
    [
        ("salesmart", "salesmart-config"),
        ("salesmart-prod", "salesmart-prod-config"),
        ("shop", "shop-salesmart-config"),
    ],
)
def test_notes_name_the_config_map_the_airflow_values_must_mount(
    release: str, config_map: str
) -> None:
    """helm/airflow-values.yaml mounts salesmart-config: under another release name the
    Airflow pods waited for a ConfigMap that never came (found by a read-through)."""
    notes = render_notes(release=release)
    assert f"The pipeline configuration is the ConfigMap {config_map}:" in notes
    # The default release's ConfigMap is the one the Airflow values carry.
    airflow = yaml.safe_load((CHART_DIR.parent / "airflow-values.yaml").read_text())
    names = {v["configMap"]["name"] for v in airflow["volumes"] if "configMap" in v}
    assert names == {"salesmart-config"}


def test_notes_warn_when_trends_bq_has_no_bigquery_project() -> None:
    warning = "No BigQuery project is set"
    assert warning in render_notes()  # the defaults name the local placeholder only
    assert warning not in render_notes({"bigquery": {"project": "acme-dw"}})
    assert warning not in render_notes({"functions": {"trends_bq": {"enabled": False}}})
    named = "data_warehouse:\n  project_id: acme-dw\n"
    assert warning not in render_notes({"pipelineConfig": named})
