"""Knative autoscaling values derived from the measured latency-vs-concurrency curves.

The rule (also in bench/RESULTS.md):

- ``containerConcurrency`` is the knee of the curve: the smallest measured concurrency whose
  throughput reaches ``KNEE_SHARE`` of the best throughput measured. Past the knee a pod only
  queues requests: throughput stays flat while latency grows with every extra request in
  flight, so more concurrency belongs on more pods, not in one.
- ``autoscaling.target`` equals it: Knative's default target utilization (70%) then adds
  pods when 70% of the knee is in flight, before the hard limit makes the activator queue.
- ``minScale`` is 1 for the interactive functions (a person waits: login and the dashboard)
  whose cold start costs more than ``COLD_START_FACTOR`` times their warm median latency,
  and 0 (scale to zero) otherwise.
- No value for a function whose curve is a local stand-in's (``STAND_IN_LIMITED``): the
  chart's defaults stay until it is measured against the real service.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from common.functions import FUNCTIONS

KNEE_SHARE = 0.9
COLD_START_FACTOR = 10.0
INTERACTIVE = ("token", "dashboard")
#: Functions whose measured curve belongs to a local stand-in, not to them. trends_bq waits
#: on the BigQuery stand-in (one DuckDB process: ~35 req/s at any concurrency), so its knee
#: would be 1 request per pod; against real BigQuery a request mostly waits on the network,
#: and one per pod would need a pod per request in flight.
STAND_IN_LIMITED = {
    "trends_bq": (
        "measured against the local BigQuery stand-in, whose single process is the limit at "
        "every concurrency: the chart's defaults stay until it is measured against BigQuery"
    ),
}


def knee(curve: Sequence[Mapping[str, Any]]) -> int:
    """The smallest concurrency reaching ``KNEE_SHARE`` of the best measured throughput."""
    points = sorted(
        (int(point["connections"]), float(point["requests_per_second"])) for point in curve
    )
    if not points:
        raise ValueError("no measurements")
    best = max(rate for _, rate in points)
    return next(c for c, rate in points if rate >= KNEE_SHARE * best)


def min_scale(name: str, cold_start_seconds: float, warm_p50_ms: float) -> int:
    if name not in INTERACTIVE or math.isnan(cold_start_seconds):
        return 0
    return 1 if cold_start_seconds * 1000 > COLD_START_FACTOR * max(warm_p50_ms, 1.0) else 0


def recommend(
    curves: Mapping[str, Sequence[Mapping[str, Any]]],
    cold_starts: Mapping[str, float],
) -> dict[str, dict[str, Any]]:
    """Per function: containerConcurrency, target, minScale and the numbers behind them."""
    out: dict[str, dict[str, Any]] = {}
    for name, curve in curves.items():
        if name in STAND_IN_LIMITED:
            best = max(float(p["requests_per_second"]) for p in curve)
            out[name] = {
                "kept_chart_defaults": STAND_IN_LIMITED[name],
                "because": {"best_requests_per_second": best},
            }
            continue
        concurrency = knee(curve)
        at_knee = next(p for p in curve if int(p["connections"]) == concurrency)
        single = min(curve, key=lambda p: int(p["connections"]))
        warm_p50 = float(single["latency_ms"]["p50"])
        cold = float(cold_starts.get(name, math.nan))
        out[name] = {
            "containerConcurrency": concurrency,
            "target": concurrency,
            "minScale": min_scale(name, cold, warm_p50),
            "because": {
                "best_requests_per_second": max(float(p["requests_per_second"]) for p in curve),
                "knee_requests_per_second": float(at_knee["requests_per_second"]),
                "knee_p99_ms": float(at_knee["latency_ms"]["p99"]),
                "warm_p50_ms": warm_p50,
                "cold_start_seconds": None if math.isnan(cold) else round(cold, 3),
            },
        }
    return out


def from_results(results: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The recommendation for a results file of ``make bench``, by the rule above: a pure
    function of its curves and cold starts, so a stored run can be re-read by a newer rule."""
    curves = {
        name: entry["curve"]
        for name, entry in results.get("load", {}).items()
        if name in FUNCTIONS and isinstance(entry, dict) and entry.get("curve")
    }
    colds = {
        name: float(entry["median_seconds"])
        for name, entry in results.get("cold_start", {}).items()
        if name in FUNCTIONS and isinstance(entry, dict) and entry.get("median_seconds") is not None
    }
    return recommend(curves, colds)


def values_yaml(recommended: Mapping[str, Mapping[str, Any]], header: str) -> str:
    """A Helm values file (``helm install -f``) with the recommended knobs only; functions
    without a recommendation are named in a comment and keep the chart's defaults."""
    kept = [name for name, values in recommended.items() if "kept_chart_defaults" in values]
    for name in kept:
        header += f"\n{name}: not set here: {recommended[name]['kept_chart_defaults']}."
    functions = {
        name: {
            "containerConcurrency": int(values["containerConcurrency"]),
            "autoscaling": {
                "target": int(values["target"]),
                "minScale": int(values["minScale"]),
            },
        }
        for name, values in recommended.items()
        if name not in kept
    }
    comment = "".join(f"# {line}".rstrip() + "\n" for line in header.splitlines())
    body = yaml.safe_dump({"functions": functions}, sort_keys=False)
    return comment + body
