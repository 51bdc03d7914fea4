"""Every rendered object validates offline: core objects with kubernetes-validate (strict,
Kubernetes 1.32), Knative Services with the Knative Serving models (strict) plus the rules of
tests/deploy/knative_rules.py, for default values and for overridden ones."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import kubernetes_validate
import pytest

from pipeline.render_manifests import render_chart
from tests.deploy import knative_rules
from tests.deploy.conftest import Objects, knative_services

KUBERNETES_VERSION = "1.32.0"
SECRET = "s" * 40

SCENARIOS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "tuned": {
        "domain": "apps.example.com",
        "serviceAccountName": "salesmart-runtime",
        "imagePullSecrets": [{"name": "regcred"}],
        "secrets": {
            "existingSecret": "",
            "jwtSecret": SECRET,
            "piiKey": SECRET[::-1] + "-pii",
            "databaseUrl": "postgresql://app:database-password-of-32-bytes-00@db:5432/salesmart",
        },
        "bigquery": {"project": "acme-dw", "location": "EU", "credentialsSecret": "bq-sa"},
        "postgresTls": {"caSecret": "cloudsql-server-ca", "caKey": "server-ca.pem"},
        "containerSecurityContext": {"readOnlyRootFilesystem": True},
        "functions": {
            "token": {
                "workers": 2,
                "env": {"LOG_LEVEL": "debug"},
                "autoscaling": {
                    "class": "hpa.autoscaling.knative.dev",
                    "metric": "cpu",
                    "target": 70,
                    "minScale": 1,
                    "maxScale": 4,
                },
            },
            "trends_pg": {
                "containerConcurrency": 0,
                "threads": 16,
                "timeoutSeconds": 600,
                "autoscaling": {
                    "metric": "rps",
                    "target": 150,
                    "minScale": 2,
                    "maxScale": 0,
                    "scaleDownDelaySeconds": 3600,
                },
                "probes": {"readiness": {"periodSeconds": 2}},
            },
            "dashboard": {"visibility": "cluster-local"},
        },
    },
}


@pytest.fixture(scope="module", params=sorted(SCENARIOS))
def rendered(request: pytest.FixtureRequest) -> Objects:
    return render_chart(SCENARIOS[request.param], namespace="analytics")


def core_objects(objects: Objects) -> Objects:
    return [o for o in objects if not o["apiVersion"].startswith("serving.knative.dev/")]


def test_every_core_object_passes_strict_kubernetes_validation(rendered: Objects) -> None:
    objects = core_objects(rendered)
    assert {o["kind"] for o in objects} >= {"ConfigMap", "Job"}
    for obj in objects:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_every_function_pod_passes_strict_kubernetes_validation(rendered: Objects) -> None:
    # A revision's pod spec is a core PodSpec plus Knative's own fields: validate it as a Pod.
    for service in knative_services(rendered).values():
        template = service["spec"]["template"]
        pod_spec = {
            k: v
            for k, v in template["spec"].items()
            if k
            not in {
                "containerConcurrency",
                "timeoutSeconds",
                "responseStartTimeoutSeconds",
                "idleTimeoutSeconds",
            }
        }
        # Knative's defaulting fills the probes' port with the container port.
        pod_spec = copy.deepcopy(pod_spec)
        for container in pod_spec["containers"]:
            for probe in ("readinessProbe", "livenessProbe"):
                http = container.get(probe, {}).get("httpGet")
                if http is not None and "port" not in http:
                    http["port"] = container["ports"][0]["containerPort"]
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": service["metadata"]["name"], **template["metadata"]},
            "spec": pod_spec,
        }
        kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)


def test_every_knative_service_passes_models_and_knative_rules(rendered: Objects) -> None:
    services = knative_services(rendered)
    assert len(services) == 4
    for name, service in services.items():
        assert knative_rules.violations(service) == [], name


def test_strict_kubernetes_validation_can_fail() -> None:
    job = next(o for o in render_chart() if o["kind"] == "Job")
    broken = copy.deepcopy(job)
    broken["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)
    broken = copy.deepcopy(job)
    broken["spec"]["backoffLimit"] = "2"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def _template(doc: dict[str, Any]) -> dict[str, Any]:
    template: dict[str, Any] = doc["spec"]["template"]
    return template


def _container(doc: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = _template(doc)["spec"]["containers"][0]
    return container


def _annotate(doc: dict[str, Any], key: str, value: str) -> None:
    _template(doc)["metadata"]["annotations"][f"autoscaling.knative.dev/{key}"] = value


BREAKAGES: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    (
        "annotation on the Service's metadata",
        lambda d: (
            d["metadata"]
            .setdefault("annotations", {})
            .update({"autoscaling.knative.dev/min-scale": "1"})
        ),
        "on the Service's metadata",
    ),
    (
        "cpu metric with the KPA class",
        lambda d: _annotate(d, "metric", "cpu"),
        "metric 'cpu' is not valid",
    ),
    (
        "min-scale above max-scale",
        lambda d: _annotate(d, "min-scale", "11"),
        "min-scale 11 exceeds max-scale 10",
    ),
    (
        "negative min-scale",
        lambda d: _annotate(d, "min-scale", "-1"),
        "min-scale must be a non-negative integer",
    ),
    (
        "unknown autoscaling annotation",
        lambda d: _annotate(d, "minScale", "1"),
        "unknown annotation autoscaling.knative.dev/minScale",
    ),
    (
        "scale-down delay above an hour",
        lambda d: _annotate(d, "scale-down-delay", "2h"),
        "scale-down-delay must be a duration of at most 1h",
    ),
    ("zero target", lambda d: _annotate(d, "target", "0"), "target must be >= 0.01"),
    (
        "unknown container key",
        lambda d: _container(d).update({"bogus": 1}),
        "unknown key spec.template.spec.containers[0].bogus",
    ),
    (
        "unknown probe key",
        lambda d: _container(d)["readinessProbe"].update({"perodSeconds": 1}),
        "unknown key spec.template.spec.containers[0].readinessProbe.perodSeconds",
    ),
    (
        "string containerConcurrency",
        lambda d: _template(d)["spec"].update({"containerConcurrency": "8"}),
        "Knative Serving model",
    ),
    (
        "containerConcurrency above 1000",
        lambda d: _template(d)["spec"].update({"containerConcurrency": 1001}),
        "containerConcurrency must be 0..1000",
    ),
    (
        "timeout above 600",
        lambda d: _template(d)["spec"].update({"timeoutSeconds": 601}),
        "timeoutSeconds must be 1..600",
    ),
    (
        "feature-flagged pod field",
        lambda d: _template(d)["spec"].update({"hostNetwork": True}),
        "spec.template.spec.hostNetwork is not allowed",
    ),
    (
        "reserved env name",
        lambda d: _container(d)["env"].append({"name": "PORT", "value": "1"}),
        "env PORT is reserved",
    ),
    (
        "writable config mount",
        lambda d: _container(d)["volumeMounts"][0].pop("readOnly"),
        "must be readOnly",
    ),
    (
        "mount on /tmp",
        lambda d: _container(d)["volumeMounts"][0].update({"mountPath": "/tmp"}),
        "mount path '/tmp' is reserved",
    ),
    (
        "queue-proxy port",
        lambda d: _container(d)["ports"][0].update({"containerPort": 8012}),
        "port 8012 is reserved",
    ),
    (
        "readiness timeout beside Knative's own probing (period 0)",
        lambda d: _container(d)["readinessProbe"].update({"timeoutSeconds": 1}),
        "readinessProbe.timeoutSeconds is disallowed when periodSeconds is zero",
    ),
    (
        "readiness failure threshold beside period 0",
        lambda d: _container(d)["readinessProbe"].update({"failureThreshold": 3}),
        "readinessProbe.failureThreshold is disallowed when periodSeconds is zero",
    ),
    (
        "probe on another port",
        lambda d: _container(d)["livenessProbe"]["httpGet"].update({"port": 9000}),
        "probes port 9000",
    ),
    (
        "privileged container",
        lambda d: _container(d)["securityContext"].update({"privileged": True}),
        "securityContext.privileged is not allowed",
    ),
    (
        "second container",
        lambda d: _template(d)["spec"]["containers"].append(copy.deepcopy(_container(d))),
        "exactly one container",
    ),
]


@pytest.mark.parametrize(
    ("case", "breakage", "expected"), BREAKAGES, ids=[case for case, _, _ in BREAKAGES]
)
def test_knative_rules_catch_each_breakage(
    case: str, breakage: Callable[[dict[str, Any]], None], expected: str
) -> None:
    service = copy.deepcopy(knative_services(render_chart())["token"])
    assert knative_rules.violations(service) == []
    breakage(service)
    problems = knative_rules.violations(service)
    assert any(expected in problem for problem in problems), problems
