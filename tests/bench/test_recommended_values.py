"""helm/salesmart/values-recommended.yaml (written by ``make bench``) is accepted by the chart
as ``helm install -f`` would take it, and carries what the bench derived; the derivation rule
itself on made-up curves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

from bench import recommend
from bench.run import VALUES_FILE
from pipeline.render_manifests import CHART_DIR, render_chart, user_values
from tests.deploy.conftest import FUNCTIONS, env_of, knative_services
from tests.deploy.knative_rules import violations

RESULTS_DIR = VALUES_FILE.parents[2] / "bench" / "results"


def _latest_results() -> dict[str, Any]:
    files = sorted(RESULTS_DIR.glob("*.json"))
    assert files, "make bench writes bench/results/*.json"
    data: dict[str, Any] = json.loads(files[-1].read_text(encoding="utf-8"))
    return data


@pytest.fixture(scope="module")
def recommended_values() -> dict[str, Any]:
    assert VALUES_FILE.is_file(), "make bench writes helm/salesmart/values-recommended.yaml"
    return user_values([VALUES_FILE])


def test_the_values_file_passes_the_chart_schema(recommended_values: dict[str, Any]) -> None:
    with helm.Chart.load(CHART_DIR) as chart:
        chart.validate_schema(chart.merge_values(recommended_values))
    assert set(recommended_values) == {"functions"}
    assert set(recommended_values["functions"]) <= set(FUNCTIONS)


def test_the_rendered_services_carry_the_recommendation_and_knative_accepts_them(
    recommended_values: dict[str, Any],
) -> None:
    services = knative_services(render_chart(recommended_values))
    for name, values in recommended_values["functions"].items():
        service = services[name]
        assert violations(service) == [], name
        template = service["spec"]["template"]
        annotations = template["metadata"]["annotations"]
        concurrency = values["containerConcurrency"]
        assert template["spec"]["containerConcurrency"] == concurrency
        assert annotations["autoscaling.knative.dev/target"] == str(values["autoscaling"]["target"])
        min_scale = str(values["autoscaling"]["minScale"])
        assert annotations["autoscaling.knative.dev/min-scale"] == min_scale
        # gunicorn serves as many requests at once as Knative lets in, and the probes.
        assert env_of(service)["THREADS"] == str(concurrency + 1)


def test_the_values_file_is_what_the_latest_results_recommend(
    recommended_values: dict[str, Any],
) -> None:
    derived = recommend.from_results(_latest_results())
    wanted = {name for name, entry in derived.items() if "kept_chart_defaults" not in entry}
    assert set(recommended_values["functions"]) == wanted
    for name, values in recommended_values["functions"].items():
        assert values["containerConcurrency"] == derived[name]["containerConcurrency"]
        assert values["autoscaling"] == {
            "target": derived[name]["target"],
            "minScale": derived[name]["minScale"],
        }
    # trends_bq was measured against the local stand-in: its curve is the stand-in's.
    assert "trends_bq" not in recommended_values["functions"]
    assert "# trends_bq: not set here: measured against the local BigQuery stand-in" in (
        VALUES_FILE.read_text(encoding="utf-8")
    )


def _curve(rates: dict[int, float], p50_ms: float = 5.0) -> list[dict[str, Any]]:
    return [
        {"connections": c, "requests_per_second": r, "latency_ms": {"p50": p50_ms, "p99": 9.0}}
        for c, r in rates.items()
    ]


def test_the_rule_picks_the_knee_and_min_scale() -> None:
    curves = {
        # CPU-bound: flat from two in flight on.
        "token": _curve({1: 2.1, 2: 4.0, 4: 4.1, 8: 4.1}, p50_ms=450),
        # Saturates at 8.
        "trends_pg": _curve({1: 300, 2: 500, 4: 700, 8: 820, 16: 850, 32: 840}),
        "dashboard": _curve({1: 80, 8: 80}, p50_ms=12),
        # Flat because the stand-in behind it is: no recommendation.
        "trends_bq": _curve({1: 35, 8: 36, 32: 35}, p50_ms=28),
    }
    colds = {"token": 0.9, "trends_pg": 0.6, "dashboard": 0.7, "trends_bq": 0.4}
    out = recommend.recommend(curves, colds)
    assert set(out.pop("trends_bq")) == {"kept_chart_defaults", "because"}
    assert {n: out[n]["containerConcurrency"] for n in out} == {
        "token": 2,
        "trends_pg": 8,
        "dashboard": 1,
    }
    assert all(out[n]["target"] == out[n]["containerConcurrency"] for n in out)
    # The dashboard waits 0.7 s on 12 ms pages: kept warm; a login already takes 0.45 s, and
    # trends_pg is an API for programs: both scale to zero.
    assert {n: out[n]["minScale"] for n in out} == {"token": 0, "trends_pg": 0, "dashboard": 1}


def test_values_yaml_is_a_helm_values_file(tmp_path: Path) -> None:
    out = recommend.recommend(
        {"trends_pg": _curve({1: 10, 8: 40}), "trends_bq": _curve({1: 30, 8: 30})},
        {"trends_pg": 0.5},
    )
    path = tmp_path / "values.yaml"
    path.write_text(recommend.values_yaml(out, "generated\nby a test"))
    assert path.read_text().startswith(
        "# generated\n# by a test\n# trends_bq: not set here: measured against the local"
    )
    assert yaml.safe_load(path.read_text()) == {
        "functions": {
            "trends_pg": {"containerConcurrency": 8, "autoscaling": {"target": 8, "minScale": 0}}
        }
    }
    render_chart(user_values([path]))
