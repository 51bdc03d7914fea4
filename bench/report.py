"""bench/RESULTS.md from one results file: the numbers, their ratios to the floors, the
targets of issue 7 met or missed, and the rule behind the recommended Knative values; and
helm/salesmart/values-recommended.yaml, those values (by the current rule, from the file's
measurements)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench import recommend
from bench.functions import SERVING_ENV
from bench.machine import ratio
from bench.recommend import COLD_START_FACTOR, KNEE_SHARE
from common.config import REPO_ROOT

POSTGREST_RPS = 2000  # PostgREST's published throughput on a 2-vCPU instance
ORIGINAL_RPS, ORIGINAL_P99_MS = 5, 11_000  # the original design measured on this machine
COLD_TARGETS = {"token": 1.5, "trends_pg": 1.5, "dashboard": 1.5, "trends_bq": 2.0}
FUNCTION_ORDER = ("token", "trends_pg", "trends_bq", "dashboard")
RESULTS_DIR = REPO_ROOT / "bench" / "results"
RESULTS_MD = REPO_ROOT / "bench" / "RESULTS.md"
VALUES_FILE = REPO_ROOT / "helm" / "salesmart" / "values-recommended.yaml"
# Hand-written analysis (profiles, causes, fixes) appended to RESULTS.md.
NOTES = REPO_ROOT / "bench" / "NOTES.md"


def _point(curve: Sequence[Mapping[str, Any]], connections: int) -> Mapping[str, Any] | None:
    return next((p for p in curve if int(p["connections"]) == connections), None)


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _verdict(ok: bool | None) -> str:
    return "–" if ok is None else ("met" if ok else "**missed**")


def targets(results: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(target, measured, verdict) rows."""
    rows: list[tuple[str, str, str]] = []
    cold = results.get("cold_start", {})
    for name, limit in COLD_TARGETS.items():
        entry = cold.get(name)
        if isinstance(entry, dict) and entry.get("ratio_to_hello") is not None:
            value = float(entry["ratio_to_hello"])
            rows.append(
                (f"cold start {name} ≤ {limit}× hello", f"{value:.2f}×", _verdict(value <= limit))
            )
    curves = results.get("load", {})
    pg, hello = curves.get("trends_pg"), curves.get("hello")
    if pg and hello:
        pg32, hello32 = _point(pg["curve"], 32), _point(hello["curve"], 32)
        if pg32 and hello32:
            share = ratio(float(pg32["requests_per_second"]), float(hello32["requests_per_second"]))
            rows.append(
                (
                    "trends_pg throughput at c=32 ≥ 50% of hello",
                    f"{(share or 0) * 100:.0f}%",
                    _verdict(share is not None and share >= 0.5),
                )
            )
            p99 = float(pg32["latency_ms"]["p99"])
            rows.append(("trends_pg p99 at c=32 ≤ 50 ms", f"{p99:.1f} ms", _verdict(p99 <= 50)))
    ingest = results.get("ingestion")
    if ingest:
        copied = float(ingest["ratio_to_copy"])
        rows.append(
            (
                "ingestion ≥ 50% of plain COPY rows/s",
                f"{copied * 100:.0f}%",
                _verdict(copied >= 0.5),
            )
        )
    if hello:
        for name in FUNCTION_ORDER:
            entry = curves.get(name)
            if entry:
                times = ratio(float(entry["rss_idle_mib"]), float(hello["rss_idle_mib"]))
                rows.append(
                    (
                        f"idle memory {name} ≤ 1.5× hello",
                        f"{_fmt(times)}×",
                        _verdict(times is not None and times <= 1.5),
                    )
                )
    return rows


def _serving_note(settings: Mapping[str, Any]) -> str:
    serving_env = settings.get("serving_env")
    if not serving_env:  # runs before the serving environment was recorded: the dev one
        return "Function instances ran from the dev environment (.venv)."
    if Path(serving_env).name == SERVING_ENV.name:  # `make bench`'s, in whichever clone
        return f"Function instances ran from `{SERVING_ENV.name}`, the image's packages."
    return f"Function instances ran from `{serving_env}` (`--serving-env`)."


def markdown(results: Mapping[str, Any], json_path: Path) -> str:
    try:
        source = json_path.relative_to(REPO_ROOT / "bench")
    except ValueError:
        source = json_path
    settings = results["settings"]
    lines = [
        "# Benchmarks",
        "",
        f"`make bench`, {results['started_at']} → {results.get('finished_at', '?')}, "
        f"{results['machine']['cpus']} CPUs, Python {results['machine']['python']}. "
        f"All numbers: [{source}]({source}). Everything runs on this one machine over "
        "loopback: the load generator, the function, PostgreSQL and the BigQuery stand-in "
        "share the two cores.",
        _serving_note(settings),
        "",
        _load_note(results),
        "",
        "## Targets",
        "",
        "| target | measured | |",
        "|---|---|---|",
    ]
    lines += [f"| {name} | {value} | {verdict} |" for name, value, verdict in targets(results)]
    lines += _cold_table(results)
    lines += _load_tables(results, settings)
    lines += _ingest_table(results)
    lines += _recommended(results)
    if NOTES.is_file():
        lines += ["", NOTES.read_text(encoding="utf-8").strip()]
    return "\n".join(lines) + "\n"


def values_file(results: Mapping[str, Any], json_path: Path) -> str:
    """helm/salesmart/values-recommended.yaml for a results file."""
    header = (
        f"Recommended Knative values, generated by `make bench` ({json_path.name}, "
        f"1-min load {results['machine']['load_average'][0]} at start).\n"
        "Rule: bench/RESULTS.md. Do not edit by hand: run `make bench` again.\n"
        f"Use: helm install salesmart helm/salesmart -f {VALUES_FILE.relative_to(REPO_ROOT)}"
    )
    return recommend.values_yaml(recommend.from_results(results), header)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.report [RESULTS.json]``: rewrite bench/RESULTS.md and the recommended
    values from a results file (default: the newest in bench/results/)."""
    import json
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    path = Path(args[0]) if args else max(RESULTS_DIR.glob("*.json"))
    results = json.loads(path.read_text(encoding="utf-8"))
    RESULTS_MD.write_text(markdown(results, path.resolve()), encoding="utf-8")
    print(f"{RESULTS_MD} written from {path}")
    if "load" in results:
        VALUES_FILE.write_text(values_file(results, path), encoding="utf-8")
        print(f"{VALUES_FILE} written from {path}")
    return 0


def _load_note(results: Mapping[str, Any]) -> str:
    quiet = results.get("quiet", {})
    loads = [entry["load_average"][0] for entry in quiet.values() if "load_average" in entry]
    noisy = [name for name, entry in quiet.items() if not entry.get("quiet", True)]
    text = (
        f"Load average (1 min) when each measured section started: "
        f"{', '.join(f'{x:.2f}' for x in loads) or 'not recorded'}; "
        f"threshold {results['settings']['max_load']}."
    )
    if noisy:
        text += f" **Not quiet** (measured anyway after waiting): {', '.join(noisy)}."
    return text


def _cold_table(results: Mapping[str, Any]) -> list[str]:
    cold = results.get("cold_start")
    if not cold:
        return []
    lines = [
        "",
        "## Cold start (process start → first 200 on a real request, median of "
        f"{results['settings']['cold_runs']})",
        "",
        "| function | median s | × hello |",
        "|---|---|---|",
    ]
    for name in ("hello", *FUNCTION_ORDER):
        entry = cold.get(name)
        if isinstance(entry, dict) and "median_seconds" in entry:
            lines.append(
                f"| {name} | {entry['median_seconds']:.3f} | {_fmt(entry['ratio_to_hello'])} |"
            )
    return lines


def _load_tables(results: Mapping[str, Any], settings: Mapping[str, Any]) -> list[str]:
    curves = results.get("load")
    if not curves:
        return []
    hello = curves.get("hello", {}).get("curve", [])
    lines = [
        "",
        f"## Throughput and latency (wrk, {settings['duration_seconds']:g} s per level, "
        f"gunicorn WORKERS={settings['gunicorn']['WORKERS']} "
        f"THREADS={settings['gunicorn']['THREADS']})",
        "",
        "req/s (× the floor at the same c: hello for token, trends_bq and the dashboard;"
        " pgbench running the same SQL, the database floor, for trends_pg, whose ratio to"
        " hello is in the Targets table) and p50 / p95 / p99 ms.",
        "",
        "| function | c | req/s | × floor | p50 | p95 | p99 | errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    pgbench = curves.get("pgbench", {}).get("curve", [])
    for name in ("hello", *FUNCTION_ORDER, "pgbench"):
        entry = curves.get(name)
        if not entry:
            continue
        for point in entry["curve"]:
            c = int(point["connections"])
            floor = _point(pgbench if name == "trends_pg" else hello, c)
            times = (
                ratio(float(point["requests_per_second"]), float(floor["requests_per_second"]))
                if floor and name not in ("hello", "pgbench")
                else None
            )
            lat = point["latency_ms"]
            errors = point.get("errors")
            failed = sum(errors.values()) if isinstance(errors, dict) else point.get("failed", 0)
            lines.append(
                f"| {name} | {c} | {_fmt(point['requests_per_second'], 1)} | {_fmt(times)} | "
                f"{_fmt(lat['p50'])} | {_fmt(lat['p95'])} | {_fmt(lat['p99'])} | {failed} |"
            )
    pg = curves.get("trends_pg")
    if pg:
        best = max(pg["curve"], key=lambda p: float(p["requests_per_second"]))
        lines += [
            "",
            f"trends_pg at best {best['requests_per_second']} req/s (c={best['connections']}), "
            f"against PostgREST's published ~{POSTGREST_RPS} req/s on 2 vCPU (a server that does "
            f"nothing but SQL-to-JSON) and the original design's {ORIGINAL_RPS} req/s with "
            f"p99 {ORIGINAL_P99_MS / 1000:.0f} s on this machine.",
        ]
    lines += [
        "",
        "### Memory per instance (gunicorn master + worker, MiB)",
        "",
        "RSS summed over the two processes (the targets' measure) counts every page they share"
        " (the app, loaded before the fork) twice; PSS splits shared pages between them, so its"
        " sum is what the instance really holds, about what its pod's memory cgroup is charged.",
        "",
        "| function | idle RSS | × hello | under load RSS | idle PSS | × hello | under load PSS |",
        "|---|---|---|---|---|---|---|",
    ]
    hello = curves.get("hello", {})
    for name in ("hello", *FUNCTION_ORDER):
        entry = curves.get(name)
        if entry:
            cells = [name]
            for measure in ("rss", "pss"):
                idle, floor = entry.get(f"{measure}_idle_mib"), hello.get(f"{measure}_idle_mib")
                times = ratio(float(idle), float(floor)) if idle and floor else None
                cells += [
                    _fmt(idle, 1),
                    _fmt(times),
                    _fmt(entry.get(f"{measure}_under_load_mib"), 1),
                ]
            lines.append("| " + " | ".join(cells) + " |")
    login = results.get("login")
    token = curves.get("token")
    if login and token:
        single = _point(token["curve"], 1)
        lines += [
            "",
            f"Login (POST /token) at bcrypt cost {login['bcrypt_rounds']}: p50 "
            f"{_fmt(single['latency_ms']['p50']) if single else '–'} ms at c=1; one bcrypt "
            f"check alone takes {login['bcrypt_check_ms_median']} ms on this machine.",
        ]
    return lines


def _ingest_table(results: Mapping[str, Any]) -> list[str]:
    ingest = results.get("ingestion")
    lines: list[str] = []
    if ingest:
        lines += [
            "",
            f"## Ingestion ({ingest['rows']:,} rows, {ingest['file_bytes'] / 2**20:.0f} MiB, "
            f"median of {ingest['runs']}, fsync on)",
            "",
            "| | s | rows/s | × plain COPY |",
            "|---|---|---|---|",
            f"| plain `\\copy` into 5 text columns | {min(ingest['plain_copy_seconds']):.2f}–"
            f"{max(ingest['plain_copy_seconds']):.2f} | {ingest['plain_copy_rows_per_second']:,}"
            " | 1 |",
        ]
        if "typed_copy_seconds" in ingest:
            typed = ingest["typed_copy_seconds"]
            typed_rate = float(ingest["typed_copy_rows_per_second"])
            typed_share = ratio(typed_rate, float(ingest["plain_copy_rows_per_second"]))
            lines.append(
                "| plain `\\copy` of the loaded rows into the raw shape (typed, primary key) | "
                f"{min(typed):.2f}–"
                f"{max(typed):.2f} | {typed_rate:,.0f} | {_fmt(typed_share, 3)} |"
            )
        lines += [
            f"| `salesmart ingest` | {min(ingest['ingest_seconds']):.2f}–"
            f"{max(ingest['ingest_seconds']):.2f} | {ingest['ingest_rows_per_second']:,} | "
            f"{ingest['ratio_to_copy']:.3f} |",
        ]
        before = ingest.get("baseline")
        if before:
            share = ratio(
                float(before["ingest_rows_per_second"]), float(ingest["plain_copy_rows_per_second"])
            )
            lines.append(
                f"| `salesmart ingest` before (commit {before['commit'][:10]}) | "
                f"{min(before['ingest_seconds']):.2f}–{max(before['ingest_seconds']):.2f} | "
                f"{before['ingest_rows_per_second']:,} | {_fmt(share, 3)} |"
            )
        if "ratio_to_typed_copy" in ingest:
            lines += [
                "",
                f"`salesmart ingest` runs at {ingest['ratio_to_typed_copy']:.3f} × a plain COPY"
                " into a table of the raw area's shape (the target's own floor: typed columns"
                " and the primary key that makes loads idempotent).",
            ]
    for name, label in (("dbt_postgres", "PostgreSQL"),):
        entry = results.get(name)
        if entry:
            lines += [
                "",
                f"dbt build on {label} ({entry.get('models')} models, "
                f"{entry.get('data_tests')} data tests): {entry['duration_seconds']} s.",
            ]
    bq = results.get("bigquery")
    if bq:
        lines.append(
            f"BigQuery stand-in: {bq['rows']:,} rows loaded in {bq['ingest_seconds']} s "
            f"({bq['ingest_rows_per_second']:,} rows/s; a smaller file than PostgreSQL's: the "
            f"DuckDB-backed emulator is far slower to load), dbt build "
            f"{bq['dbt']['duration_seconds']} s."
        )
    return lines


def _recommended(results: Mapping[str, Any]) -> list[str]:
    if "load" not in results:
        return []
    # By the current rule, from the stored curves (a results file keeps the rule of its day).
    recommended = recommend.from_results(results)
    if not recommended:
        return []
    lines = [
        "",
        "## Recommended Knative values (helm/salesmart/values-recommended.yaml)",
        "",
        f"Rule: `containerConcurrency` is the knee of each function's curve — the smallest "
        f"measured concurrency that reaches {KNEE_SHARE:.0%} of the best throughput measured; "
        "past it a pod only queues requests (throughput flat, latency growing with every "
        "request in flight), so more load belongs on more pods. `autoscaling.target` is set to "
        "the same number: Knative's default target utilization (70%) then adds a pod when 70% "
        "of the knee is in flight, before the hard limit makes the activator queue requests. "
        f"`minScale` is 1 for the interactive functions (token, dashboard: a person waits) "
        f"whose cold start costs more than {COLD_START_FACTOR:g}× their warm median latency, "
        "and 0 (scale to zero) for the rest. No value is given for a function whose curve is "
        "a local stand-in's (trends_bq: the BigQuery stand-in is the limit at every "
        "concurrency), so the chart's defaults stay for it. Install with "
        "`helm install salesmart helm/salesmart -f helm/salesmart/values-recommended.yaml`.",
        "",
        "| function | containerConcurrency | target | minScale | req/s at knee | p99 at knee ms "
        "| cold start s |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in FUNCTION_ORDER:
        entry = recommended.get(name)
        if entry and "kept_chart_defaults" in entry:
            best = entry["because"]["best_requests_per_second"]
            lines.append(
                f"| {name} | chart default | chart default | chart default | "
                f"(best {best}: the stand-in's) | | |"
            )
        elif entry:
            why = entry["because"]
            lines.append(
                f"| {name} | {entry['containerConcurrency']} | {entry['target']} | "
                f"{entry['minScale']} | {why['knee_requests_per_second']} | "
                f"{why['knee_p99_ms']} | {_fmt(why['cold_start_seconds'], 3)} |"
            )
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
