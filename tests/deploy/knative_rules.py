"""Offline checks of Knative Services: the Knative Serving models (strict) plus the rules its
admission webhook enforces with a default configuration, which no model expresses.

``violations(doc)`` returns human-readable problems; an empty list means the Service passes.
Rules, from Knative Serving's validation (defaults of config-features / config-autoscaler):
- unknown keys anywhere (the models silently ignore them, so keys are compared here);
- only the pod-spec and container fields Knative allows without feature flags;
- autoscaling annotations only on spec.template.metadata.annotations, with valid values
  (class, metric per class, min/max/initial scale, target, scale-down-delay <= 1h);
- containerConcurrency 0..1000, timeoutSeconds 1..600;
- one container, at most one port (named http1 or h2c, not a queue-proxy port), no reserved
  env names, read-only mounts outside reserved paths, probes without a foreign port.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from cloudcoil.models.knative_serving.serving import v1 as knative
from pydantic import ValidationError

AUTOSCALING_PREFIX = "autoscaling.knative.dev/"
KPA = "kpa.autoscaling.knative.dev"
HPA = "hpa.autoscaling.knative.dev"
METRICS = {KPA: {"concurrency", "rps"}, HPA: {"cpu", "memory"}}
KNOWN_AUTOSCALING_KEYS = {
    "class",
    "metric",
    "target",
    "min-scale",
    "max-scale",
    "initial-scale",
    "scale-down-delay",
    "target-utilization-percentage",
    "window",
    "panic-window-percentage",
    "panic-threshold-percentage",
    "activation-scale",
    "target-burst-capacity",
}
# Pod-spec fields Knative accepts without feature flags (pkg/apis/serving/fieldmask.go).
REVISION_SPEC_FIELDS = {
    "containerConcurrency",
    "timeoutSeconds",
    "responseStartTimeoutSeconds",
    "idleTimeoutSeconds",
    "containers",
    "volumes",
    "serviceAccountName",
    "imagePullSecrets",
    "enableServiceLinks",
    "automountServiceAccountToken",
}
CONTAINER_FIELDS = {
    "name",
    "args",
    "command",
    "env",
    "envFrom",
    "image",
    "imagePullPolicy",
    "livenessProbe",
    "readinessProbe",
    "startupProbe",
    "ports",
    "resources",
    "securityContext",
    "terminationMessagePath",
    "terminationMessagePolicy",
    "volumeMounts",
    "workingDir",
}
SECURITY_CONTEXT_FIELDS = {
    "capabilities",
    "readOnlyRootFilesystem",
    "runAsUser",
    "runAsGroup",
    "runAsNonRoot",
    "allowPrivilegeEscalation",
    "seccompProfile",
}
VOLUME_SOURCES = {"secret", "configMap", "projected"}
RESERVED_ENV = {"PORT", "K_SERVICE", "K_CONFIGURATION", "K_REVISION"}
RESERVED_PORTS = {8012, 8013, 8022, 9090, 9091}
RESERVED_PATHS = {"/", "/dev", "/dev/log", "/tmp", "/var", "/var/log"}
DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def unknown_keys(document: Any, parsed: Any, path: str = "") -> Iterator[str]:
    """Keys of ``document`` that the model dropped while parsing (``parsed`` is its dump)."""
    if isinstance(document, Mapping):
        if not isinstance(parsed, Mapping):
            return
        for key, value in document.items():
            where = f"{path}.{key}" if path else str(key)
            if key not in parsed:
                yield where
            else:
                yield from unknown_keys(value, parsed[key], where)
    elif isinstance(document, list) and isinstance(parsed, list):
        for index, (item, parsed_item) in enumerate(zip(document, parsed, strict=False)):
            yield from unknown_keys(item, parsed_item, f"{path}[{index}]")


def _int(value: Any) -> int | None:
    if isinstance(value, str) and re.fullmatch(r"\d+", value):
        return int(value)
    return None


def _duration_seconds(value: str) -> int | None:
    match = DURATION.fullmatch(value)
    if not value or not match:
        return None
    hours, minutes, seconds = (int(part or 0) for part in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def annotation_violations(annotations: Mapping[str, Any]) -> list[str]:
    """Problems with the autoscaling annotations of one revision template."""
    problems: list[str] = []
    auto = {
        key.removeprefix(AUTOSCALING_PREFIX): value
        for key, value in annotations.items()
        if key.startswith(AUTOSCALING_PREFIX)
    }
    for key, value in auto.items():
        if key not in KNOWN_AUTOSCALING_KEYS:
            problems.append(f"unknown annotation {AUTOSCALING_PREFIX}{key}")
        if not isinstance(value, str):
            problems.append(f"annotation {AUTOSCALING_PREFIX}{key} must be a string")
    klass = auto.get("class", KPA)
    if klass not in METRICS:
        problems.append(f"autoscaling class {klass!r} is neither {KPA} nor {HPA}")
    elif "metric" in auto and auto["metric"] not in METRICS[klass]:
        problems.append(f"metric {auto['metric']!r} is not valid for class {klass}")
    bounds: dict[str, int] = {}
    for key in ("min-scale", "max-scale", "initial-scale"):
        if key in auto:
            number = _int(auto[key])
            if number is None:
                problems.append(f"{key} must be a non-negative integer, found {auto[key]!r}")
            else:
                bounds[key] = number
    low, high = bounds.get("min-scale", 0), bounds.get("max-scale", 0)
    if high and low > high:
        problems.append(f"min-scale {low} exceeds max-scale {high}")
    if high and bounds.get("initial-scale", 1) > high:
        problems.append(f"initial-scale {bounds['initial-scale']} exceeds max-scale {high}")
    if bounds.get("initial-scale") == 0:
        problems.append("initial-scale 0 needs allow-zero-initial-scale on the cluster")
    if klass == HPA and low == 0:
        problems.append("the HPA class cannot scale to zero (min-scale must be >= 1)")
    if "target" in auto:
        try:
            if float(auto["target"]) < 0.01:
                problems.append(f"target must be >= 0.01, found {auto['target']!r}")
        except ValueError:
            problems.append(f"target must be a number, found {auto['target']!r}")
    if "scale-down-delay" in auto:
        seconds = _duration_seconds(str(auto["scale-down-delay"]))
        if seconds is None or seconds > 3600:
            problems.append(
                f"scale-down-delay must be a duration of at most 1h, "
                f"found {auto['scale-down-delay']!r}"
            )
    return problems


def _container_violations(container: Mapping[str, Any], index: int) -> list[str]:
    problems: list[str] = []
    where = f"spec.template.spec.containers[{index}]"
    problems += [
        f"{where}.{key} is not allowed by Knative"
        for key in container
        if key not in CONTAINER_FIELDS
    ]
    ports = container.get("ports", [])
    if len(ports) > 1:
        problems.append(f"{where}: Knative accepts at most one port")
    port_numbers = {p.get("containerPort") for p in ports}
    for port in ports:
        if port.get("name", "http1") not in {"http1", "h2c"}:
            problems.append(f"{where}: port name must be http1 or h2c, found {port.get('name')}")
        if port.get("containerPort") in RESERVED_PORTS:
            problems.append(f"{where}: port {port.get('containerPort')} is reserved by Knative")
    for variable in container.get("env", []):
        if variable.get("name") in RESERVED_ENV:
            problems.append(f"{where}: env {variable['name']} is reserved by Knative")
    names = [variable.get("name") for variable in container.get("env", [])]
    problems += [
        f"{where}: env {name} is set twice"
        for name in sorted({n for n in names if names.count(n) > 1})
    ]
    for mount in container.get("volumeMounts", []):
        if mount.get("readOnly") is not True:
            problems.append(f"{where}: volume mount {mount.get('name')} must be readOnly")
        path = str(mount.get("mountPath", ""))
        if not path.startswith("/") or path.rstrip("/") in RESERVED_PATHS or path == "/":
            problems.append(f"{where}: mount path {path!r} is reserved or relative")
    for probe_name in ("readinessProbe", "livenessProbe", "startupProbe"):
        probe = container.get(probe_name)
        if probe is None:
            continue
        handlers = [key for key in ("httpGet", "tcpSocket", "exec", "grpc") if key in probe]
        if len(handlers) != 1:
            problems.append(f"{where}.{probe_name} needs exactly one handler, found {handlers}")
        port = (probe.get("httpGet") or probe.get("tcpSocket") or {}).get("port")
        if port is not None and port not in port_numbers:
            problems.append(f"{where}.{probe_name} probes port {port}, not the container port")
    readiness = container.get("readinessProbe") or {}
    if not readiness.get("periodSeconds"):
        # Knative's own aggressive probing (period 0) takes no timeout or threshold
        # (serving's validateReadinessProbe); its defaulting fills them only for a period.
        problems += [
            f"{where}.readinessProbe.{key} is disallowed when periodSeconds is zero"
            for key in ("timeoutSeconds", "failureThreshold")
            if readiness.get(key)
        ]
    security = container.get("securityContext", {})
    problems += [
        f"{where}.securityContext.{key} is not allowed by Knative"
        for key in security
        if key not in SECURITY_CONTEXT_FIELDS
    ]
    if "add" in security.get("capabilities", {}):
        problems.append(f"{where}: adding capabilities needs a Knative feature flag")
    return problems


def violations(doc: Mapping[str, Any]) -> list[str]:
    """Every reason Knative Serving (default configuration) would refuse this Service."""
    problems: list[str] = []
    if doc.get("apiVersion") != "serving.knative.dev/v1" or doc.get("kind") != "Service":
        return [f"not a serving.knative.dev/v1 Service: {doc.get('apiVersion')} {doc.get('kind')}"]
    try:
        model = knative.Service.model_validate(doc, strict=True)
    except ValidationError as exc:
        return [f"Knative Serving model: {error['loc']}: {error['msg']}" for error in exc.errors()]
    dumped = model.model_dump(by_alias=True, exclude_unset=True)
    problems += [f"unknown key {key}" for key in unknown_keys(doc, dumped)]

    metadata = doc.get("metadata", {})
    name = str(metadata.get("name", ""))
    if not re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", name) or len(name) > 56:
        problems.append(
            f"Service name {name!r} is not a DNS-1035 label short enough for revision names"
        )
    problems += [
        f"autoscaling annotation {key} on the Service's metadata (belongs on "
        f"spec.template.metadata.annotations)"
        for key in metadata.get("annotations", {})
        if key.startswith(AUTOSCALING_PREFIX)
    ]

    template = doc.get("spec", {}).get("template", {})
    problems += annotation_violations(template.get("metadata", {}).get("annotations", {}))
    spec = template.get("spec", {})
    problems += [
        f"spec.template.spec.{key} is not allowed by Knative without a feature flag"
        for key in spec
        if key not in REVISION_SPEC_FIELDS
    ]
    if spec.get("automountServiceAccountToken") is True:
        problems.append("automountServiceAccountToken may only be set to false")
    concurrency = spec.get("containerConcurrency", 0)
    if not isinstance(concurrency, int) or not 0 <= concurrency <= 1000:
        problems.append(f"containerConcurrency must be 0..1000, found {concurrency!r}")
    timeout = spec.get("timeoutSeconds", 300)
    if not isinstance(timeout, int) or not 1 <= timeout <= 600:
        problems.append(f"timeoutSeconds must be 1..600, found {timeout!r}")
    containers = spec.get("containers", [])
    if len(containers) != 1:
        problems.append(f"expected exactly one container, found {len(containers)}")
    for index, container in enumerate(containers):
        problems += _container_violations(container, index)
    for volume in spec.get("volumes", []):
        sources = set(volume) - {"name"}
        if not sources <= VOLUME_SOURCES:
            problems.append(
                f"volume {volume.get('name')}: {sorted(sources - VOLUME_SOURCES)} "
                f"needs a Knative feature flag"
            )
    return problems
