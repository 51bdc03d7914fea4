"""Fixtures of the deployment tests: the chart rendered offline with helm-python-sdk."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytest

from pipeline.render_manifests import render_chart

FUNCTIONS = ("token", "trends_bq", "trends_pg", "dashboard")
Objects = list[dict[str, Any]]


def by_kind(objects: Objects, kind: str) -> dict[str, dict[str, Any]]:
    """Objects of one kind, by name."""
    return {obj["metadata"]["name"]: obj for obj in objects if obj["kind"] == kind}


def knative_services(objects: Objects) -> dict[str, dict[str, Any]]:
    """Knative Services by function name (token, trends_bq, ...)."""
    services = {}
    for obj in objects:
        if obj["apiVersion"] == "serving.knative.dev/v1" and obj["kind"] == "Service":
            container = obj["spec"]["template"]["spec"]["containers"][0]
            target = next(e["value"] for e in container["env"] if e["name"] == "FUNCTION_TARGET")
            services[target] = obj
    return services


def env_of(service: Mapping[str, Any]) -> dict[str, Any]:
    """The container env of a Knative Service: name -> value or valueFrom."""
    container = service["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


@pytest.fixture(scope="session")
def default_objects() -> Objects:
    return render_chart()


@pytest.fixture(scope="session")
def render() -> Callable[..., Objects]:
    return render_chart
